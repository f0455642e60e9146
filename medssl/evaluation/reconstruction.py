"""Reconstruction figures for masked-image methods (MAE): rows input / masked / reconstruction.

After each validation epoch (rank 0, not during the sanity check) the first images of the first validation
batch are reconstructed and saved to ``<run dir>/reconstructions/epoch_XXX.png``, and logged as an image to
the loggers that take images (TensorBoard, MLflow). 3D volumes show their middle slice along the last axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pytorch_lightning as pl
from torch import Tensor

from medssl.loggers import log_image

ROWS = ("input", "masked", "reconstruction")


@runtime_checkable
class Reconstructs(Protocol):
    """A method that can show what it reconstructs (``MAE.reconstruct``)."""

    def reconstruct(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The masked input (masked pixels NaN) and the reconstruction, both shaped like ``images``."""
        ...


class ReconstructionFigure(pl.Callback):
    """Save (and log) an input / masked / reconstruction figure once per validation epoch.

    Args:
        num_images: columns of the figure, taken from the first validation batch.
        key: batch key of the images.
        folder: sub-folder of the run directory for the PNG files.
    """

    def __init__(self, num_images: int = 4, key: str = "view_0", folder: str = "reconstructions") -> None:
        _matplotlib()  # fail at start-up, not after the first epoch
        self.num_images, self.key, self.folder = num_images, key, folder
        self._images: Tensor | None = None
        self.last_path: Path | None = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._images = None

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._images is None and trainer.is_global_zero and not trainer.sanity_checking:
            self._images = batch[self.key][: self.num_images].detach()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._images is None:
            return
        if not isinstance(pl_module, Reconstructs):
            raise TypeError(
                f"ReconstructionFigure: {type(pl_module).__name__} has no reconstruct(images) method"
            )
        images, self._images = self._images, None
        masked, reconstruction = pl_module.reconstruct(images)
        path = Path(trainer.default_root_dir) / self.folder / f"epoch_{trainer.current_epoch:03d}.png"
        rgb = save_figure([images, masked, reconstruction], path)
        log_image(trainer, f"val/{self.folder}", rgb)
        self.last_path = path


def save_figure(rows: list[Tensor], path: Path) -> np.ndarray:
    """Plot ``rows`` of ``(N, C, *spatial)`` images (channel 0) to ``path``; returns its RGB ``(H, W, 3)``."""
    _matplotlib()
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    slices = [_display_slice(r) for r in rows]  # (N, H, W) each
    cmap = colormaps["gray"].with_extremes(bad="tab:blue")  # NaN (masked patches) in blue
    count = slices[0].shape[0]
    fig = Figure(figsize=(1.6 * count, 1.6 * len(rows)), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(fig)  # Agg, never pyplot: no display, no global figure state
    axes = fig.subplots(len(rows), count, squeeze=False)
    for col in range(count):
        low, high = float(slices[0][col].min()), float(slices[0][col].max())  # the input's range for all rows
        for row, (name, images) in enumerate(zip(ROWS, slices, strict=True)):
            axes[row, col].imshow(images[col], cmap=cmap, vmin=low, vmax=high)
            axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
            if col == 0:
                axes[row, col].set_ylabel(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.draw()
    fig.savefig(path)
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _display_slice(images: Tensor) -> np.ndarray:
    """Channel 0 as ``(N, H, W)``; the middle slice along the last axis for 3D."""
    first = images[:, 0].float().cpu()
    if first.ndim == 4:
        first = first[..., first.shape[-1] // 2]
    return first.numpy()


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "reconstruction figures need matplotlib: `pip install matplotlib`, "
            "or switch them off with model.init_args.save_reconstructions: false"
        ) from error
