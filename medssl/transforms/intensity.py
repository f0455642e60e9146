"""Modality intensity presets: map raw scanner values to a stable range before any augmentation."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    Identityd,
    MapTransform,
    NormalizeIntensityd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)

from medssl.registry import Registry

#: Named CT windows as (lower, upper) Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (-160.0, 240.0),
    "abdomen": (-150.0, 250.0),
    "lung": (-1000.0, 200.0),
    "bone": (-450.0, 1050.0),
    "brain": (0.0, 80.0),
}

INTENSITY_PRESETS: Registry[str] = Registry("intensity preset")
for _name, _meaning in {
    "ct": "clip to a HU window (ct_window) and scale to [0, 1]",
    "mr": "scale the (lower, upper) percentiles of each image to [0, 1], clipping outside",
    "mr_zscore": "zero mean, unit variance over the non-zero voxels of each image",
    "xray": "min-max scale each image to [0, 1]",
    "minmax": "min-max scale each image to [0, 1] (photographs, MedMNIST)",
    "none": "leave intensities as they are",
}.items():
    INTENSITY_PRESETS.register(_name)(_meaning)


def intensity_transform(
    preset: str,
    keys: Sequence[str] = ("image",),
    *,
    ct_window: str | tuple[float, float] = "soft_tissue",
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> MapTransform:
    """Return the MONAI dictionary transform for an intensity ``preset`` (see ``INTENSITY_PRESETS``)."""
    INTENSITY_PRESETS.get(preset)  # raises with "did you mean" for an unknown name
    keys = list(keys)
    if preset == "ct":
        if isinstance(ct_window, str) and ct_window not in CT_WINDOWS:
            raise ValueError(
                f"unknown CT window {ct_window!r}; known: {', '.join(CT_WINDOWS)} or (lower, upper) HU"
            )
        lower, upper = CT_WINDOWS[ct_window] if isinstance(ct_window, str) else ct_window
        return ScaleIntensityRanged(keys, a_min=lower, a_max=upper, b_min=0.0, b_max=1.0, clip=True)
    if preset == "mr":
        lower, upper = percentiles
        return ScaleIntensityRangePercentilesd(
            keys, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
        )
    if preset == "mr_zscore":
        return NormalizeIntensityd(keys, nonzero=True, channel_wise=True)
    if preset in ("xray", "minmax"):
        return ScaleIntensityd(keys, minv=0.0, maxv=1.0, channel_wise=True)
    return Identityd(keys)
