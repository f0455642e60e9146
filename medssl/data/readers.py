"""Image readers: MONAI readers for every supported format, an item loader and a cheap header reader.

Axis convention (the one MONAI's NibabelReader, ITKReader and PILReader share): spatial axes are in
x, y, z order (NIfTI voxel order; for SimpleITK files the reverse of `GetArrayFromImage`; for 2D files
(width, height)), with the channel axis first after loading: `(C, x, y[, z])`.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection, PathLike
from monai.data import ImageReader, MetaTensor, NibabelReader, PILReader
from monai.data.utils import orientation_ras_lps
from monai.transforms import EnsureChannelFirst, MapTransform
from monai.transforms.io.array import switch_endianness
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, ensure_tuple
from PIL import Image, ImageMode

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".dcm")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES + PIL_SUFFIXES

_SITK_TYPES = ("UInt8", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64", "Float32", "Float64")
_SITK_DTYPES = {
    getattr(sitk, f"sitk{vector}{name}"): name.lower() for vector in ("", "Vector") for name in _SITK_TYPES
}
_PIL_DTYPES = {"I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16", "I": "int32", "F": "float32"}


def has_suffix(path: PathLike, suffixes: Sequence[str]) -> bool:
    """Whether the file name ends with one of `suffixes` (case-insensitive)."""
    return str(path).lower().endswith(tuple(suffixes))


def sitk_error(exc: Exception) -> str:
    """The last, human part of a SimpleITK exception message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1].removeprefix("sitk::ERROR:").strip() if lines else type(exc).__name__


def dicom_series_files(folder: PathLike) -> list[str]:
    """File names of the single DICOM series in `folder`, sorted by slice position."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(series) != 1:
        found = f"{len(series)} series" if series else "none"
        raise ValueError(f"expected a folder holding one DICOM series, found {found}")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))


def _is_dicom(path: PathLike) -> bool:
    return Path(path).is_dir() or has_suffix(path, (".dcm",))


class SimpleITKReader(ImageReader):
    """MONAI reader backed by SimpleITK for MHA/MHD, NRRD, DICOM files and DICOM series folders.

    Returns data and meta as MONAI's `ITKReader` does with its defaults (x, y, z axis order, affine
    converted from LPS to RAS, components per pixel as the last axis). A DICOM input with a single slice
    is returned as a 2D image.
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        names = ensure_tuple(filename)
        return all(Path(n).is_dir() or has_suffix(n, SITK_SUFFIXES) for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        names = ensure_tuple(data)
        images = [self._read_one(name) for name in names]
        return images if len(names) > 1 else images[0]

    def _read_one(self, name: PathLike) -> sitk.Image:
        if not self.verify_suffix(name):
            raise ValueError(
                f"{name}: not a format SimpleITKReader reads ({', '.join(SITK_SUFFIXES)}, folder)"
            )
        try:
            files = dicom_series_files(name) if Path(name).is_dir() else [str(name)]
            image = sitk.ReadImage(files if len(files) > 1 else files[0])
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{name}: {sitk_error(exc)}") from exc
        if _is_dicom(name) and image.GetDimension() == 3 and image.GetSize()[2] == 1:
            image = image[:, :, 0]
        return image

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        arrays: list[np.ndarray] = []
        meta: dict = {}
        for image in img if isinstance(img, list | tuple) else [img]:  # a sitk.Image is itself iterable
            array = sitk.GetArrayFromImage(image)  # (z, y, x[, c])
            array = array.T if image.GetNumberOfComponentsPerPixel() == 1 else np.moveaxis(array.T, 0, -1)
            header = self._meta(image)
            header[MetaKeys.ORIGINAL_CHANNEL_DIM] = (
                float("nan") if array.ndim == len(header[MetaKeys.SPATIAL_SHAPE]) else -1
            )
            arrays.append(array)
            meta = meta or header
        if len(arrays) == 1:
            return arrays[0], meta
        if np.isnan(meta[MetaKeys.ORIGINAL_CHANNEL_DIM]):  # several scalar files: stacked as channels
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
            return np.stack(arrays), meta
        return np.concatenate(arrays, axis=-1), meta

    @staticmethod
    def _meta(image: sitk.Image) -> dict:
        rank = min(image.GetDimension(), 3)
        direction = np.asarray(image.GetDirection()).reshape(image.GetDimension(), -1)[:rank, :rank]
        spacing = np.asarray(image.GetSpacing())
        affine = np.eye(rank + 1)
        affine[:rank, :rank] = direction @ np.diag(spacing[:rank])
        affine[:rank, -1] = np.asarray(image.GetOrigin())[:rank]
        affine = orientation_ras_lps(affine)
        return {
            "spacing": spacing,
            MetaKeys.ORIGINAL_AFFINE: affine,
            MetaKeys.AFFINE: affine.copy(),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.SPATIAL_SHAPE: np.asarray(image.GetSize()[:rank]),
        }


# Modes loaded as another: bilevel and alpha images to L/RGB. Palette ("P") images become L when the
# palette is grey; a colour palette keeps its indices (one channel: a label map, as in mask GIFs).
_PLAIN_MODES = {"1": "L", "LA": "L", "PA": "P", "RGBA": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


def _to_plain_mode(img: Image.Image) -> Image.Image:
    if img.mode in _PLAIN_MODES:
        img = img.convert(_PLAIN_MODES[img.mode])
    if img.mode == "P":
        palette = np.asarray(img.getpalette() or [0, 0, 0]).reshape(-1, 3)
        if np.all(palette == palette[:, :1]):
            img = img.convert("L")
    return img


class PILReader2D(PILReader):
    """MONAI's PILReader, extended to TIFF and GIF; palette/alpha images come out as L or RGB."""

    def __init__(self) -> None:
        super().__init__(converter=_to_plain_mode)

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return all(has_suffix(name, PIL_SUFFIXES) for name in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike | np.ndarray, **kwargs: Any) -> Any:
        if not isinstance(data, np.ndarray) and not self.verify_suffix(data):
            raise ValueError(f"{data}: not a 2D image format ({', '.join(PIL_SUFFIXES)})")
        return super().read(data, **kwargs)


def image_readers() -> list[ImageReader]:
    """Readers for `monai.transforms.LoadImage(reader=...)`, one per format family."""
    return [NibabelReader(), SimpleITKReader(), PILReader2D()]


def pick_reader(path: PathLike, readers: Sequence[ImageReader]) -> ImageReader:
    """The first reader that accepts `path`'s suffix (folders are DICOM series)."""
    for reader in readers:
        if reader.verify_suffix(path):
            return reader
    raise ValueError(
        f"{path}: unsupported image format; expected a folder or one of {', '.join(IMAGE_SUFFIXES)}"
    )


class LoadItemd(MapTransform):
    """Load each key into a float32 channel-first `MetaTensor` `(C, *spatial)`.

    Paths are read with `image_readers()`; arrays (MedMNIST) are wrapped with an identity affine.
    """

    def __init__(self, keys: KeysCollection, *, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.readers = image_readers()
        self.channel_first = EnsureChannelFirst()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.load(d[key])
        return d

    def load(self, value: Any) -> MetaTensor:
        if isinstance(value, np.ndarray | torch.Tensor):
            tensor = torch.as_tensor(value).to(torch.float32, copy=True)
            return MetaTensor(tensor, affine=torch.eye(tensor.ndim, dtype=torch.float64))
        reader = pick_reader(value, self.readers)
        try:  # the steps of `monai.transforms.LoadImage` with a given reader, without its default readers
            array, meta = reader.get_data(reader.read(value))
        except Exception as exc:
            raise RuntimeError(f"{value}: could not load image ({type(exc).__name__}: {exc})") from exc
        meta = switch_endianness(meta, "<")
        meta[ImageMetaKey.FILENAME_OR_OBJ] = os.fspath(value)
        tensor = MetaTensor.ensure_torch_and_prune_meta(np.asarray(array, dtype=np.float32), meta)
        return cast(MetaTensor, self.channel_first(tensor, meta_dict=meta))


@dataclass(frozen=True)
class Header:
    """What a file says about its image without decoding it. Axes follow the module's convention."""

    spatial_shape: tuple[int, ...]
    channels: int
    spacing: tuple[float, ...]
    dtype: str
    affine: tuple[tuple[float, ...], ...] | None = None  # RAS voxel-to-world, as MONAI's readers give


def read_header(path: PathLike) -> Header:
    """Read only the header of `path` (a file or a DICOM series folder). Raises ValueError if unreadable."""
    if os.path.isdir(path):
        return _dicom_series_header(path)
    if has_suffix(path, NIFTI_SUFFIXES):
        return nifti_header(nifti_image(path))
    if has_suffix(path, SITK_SUFFIXES):
        return _sitk_header([str(path)], squeeze_single_slice=has_suffix(path, (".dcm",)))
    if has_suffix(path, PIL_SUFFIXES):
        return _pil_header(path)
    raise ValueError(f"unsupported image format; expected a folder or one of {', '.join(IMAGE_SUFFIXES)}")


def _drop_trailing_singletons(shape: Sequence[int], keep: int = 3) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    while len(shape) > keep and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def nifti_image(path: PathLike) -> nib.Nifti1Image:
    """The NIfTI-1/2 image at `path`, header read, data not. Raises ValueError if unreadable."""
    try:
        img = nib.load(path)
    except Exception as exc:
        raise ValueError(f"not a readable image (NIfTI header: {exc})") from exc
    if not isinstance(img, nib.Nifti1Image):
        raise ValueError(f"not a readable image (NIfTI header: found a {type(img).__name__})")
    return img


def nifti_header(img: nib.Nifti1Image) -> Header:
    """The `Header` of an image returned by `nifti_image`."""
    shape = _drop_trailing_singletons(img.shape)
    dtype = img.get_data_dtype()
    channels = 3 if dtype.names is not None and len(dtype.names) == 3 else 1  # RGB24
    spacing = tuple(float(z) for z in img.header.get_zooms()[: len(shape)])
    affine = tuple(tuple(float(v) for v in row) for row in np.asarray(img.affine))
    return Header(shape, channels, spacing, "uint8" if channels == 3 else dtype.name, affine)


def _sitk_header(files: list[str], *, squeeze_single_slice: bool, spacing_z: float | None = None) -> Header:
    reader = _sitk_info(files[0])
    size, spacing = list(reader.GetSize()), list(reader.GetSpacing())
    if len(files) > 1:
        size[2:3], spacing[2:3] = [len(files)], [spacing_z or spacing[-1]]
    if squeeze_single_slice and len(size) == 3 and size[2] == 1:
        size, spacing = size[:2], spacing[:2]
    shape = _drop_trailing_singletons(size)
    dtype = _SITK_DTYPES.get(reader.GetPixelID(), sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    rank = min(len(shape), 3)
    spacing = spacing[: len(shape)]
    affine = _ras_affine(reader.GetDirection(), spacing, reader.GetOrigin(), rank)
    return Header(shape, reader.GetNumberOfComponents(), tuple(spacing), dtype, affine)


def _ras_affine(
    direction: Sequence[float], spacing: Sequence[float], origin: Sequence[float], rank: int
) -> tuple[tuple[float, ...], ...]:
    """The RAS affine MONAI's ITK readers build from an ITK (LPS) direction, spacing and origin."""
    full = round(len(direction) ** 0.5)
    matrix = np.asarray(direction, dtype=float).reshape(full, full)[:rank, :rank]
    affine = np.eye(rank + 1)
    affine[:rank, :rank] = matrix @ np.diag(np.asarray(spacing[:rank], dtype=float))
    affine[:rank, -1] = np.asarray(origin[:rank], dtype=float)
    return tuple(tuple(float(v) for v in row) for row in orientation_ras_lps(affine))


#: Slice gaps larger than this many times the series' typical spacing count as missing slices.
MISSING_SLICE_FACTOR = 1.5
#: Slice spacings that differ by more than this share of the typical one are inconsistent.
SPACING_TOLERANCE = 0.01


def _dicom_series_header(folder: PathLike) -> Header:
    files = dicom_series_files(folder)
    spacing_z = None
    if len(files) > 1:
        spacing_z = _slice_spacing([_sitk_info(name) for name in files])
    return _sitk_header(files, squeeze_single_slice=True, spacing_z=spacing_z)


def _slice_spacing(slices: Sequence[sitk.ImageFileReader]) -> float:
    """The spacing between consecutive slices along their normal; raises on gaps and uneven spacing."""
    direction = np.asarray(slices[0].GetDirection(), dtype=float).reshape(3, 3)
    normal = direction[:, 2]  # ITK: the third column is the slice normal
    positions = np.sort([float(np.dot(reader.GetOrigin(), normal)) for reader in slices])
    steps = np.diff(positions)
    typical = float(np.median(steps))
    if typical <= 1e-6 or steps.min() <= 1e-6:
        raise ValueError(
            f"DICOM series of {len(slices)} slices has slices at the same position (duplicated slices "
            "or several acquisitions in one series)"
        )
    if len(steps) >= 2 and steps.max() > MISSING_SLICE_FACTOR * typical:
        where = int(np.argmax(steps))
        missing = round(steps.max() / typical) - 1
        raise ValueError(
            f"DICOM series has a gap of {steps.max():.3g} mm between slices {where + 1} and {where + 2} of "
            f"{len(slices)} where the slice spacing is {typical:.3g} mm: {missing} missing slice(s)?"
        )
    if steps.max() - steps.min() > SPACING_TOLERANCE * typical:
        raise ValueError(
            f"DICOM series has inconsistent slice spacing: from {steps.min():.3g} to {steps.max():.3g} mm "
            f"over {len(slices)} slices"
        )
    return typical


def _sitk_info(name: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(name)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ValueError(f"not a readable image (SimpleITK: {sitk_error(exc)})") from exc
    return reader


def _pil_header(path: PathLike) -> Header:
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
    except Exception as exc:
        raise ValueError(f"not a readable image (PIL: {exc})") from exc
    channels = len(ImageMode.getmode(_PLAIN_MODES.get(mode, mode)).bands)
    return Header(tuple(size), channels, (1.0, 1.0), _PIL_DTYPES.get(mode, "uint8"), None)
