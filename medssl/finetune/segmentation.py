"""Segmentation fine-tuning: backbone + decoder, DiceCE loss, sliding-window Dice, HD95 and AUROC, 2D and 3D.

- [0]: UNETR, 2021, https://arxiv.org/abs/2103.10504
- [1]: MONAI, 2022, https://arxiv.org/abs/2211.02701
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal, cast, get_args

import pytorch_lightning as pl
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, compute_hausdorff_distance
from monai.networks.utils import one_hot
from torch import Tensor, nn
from torchmetrics.classification import BinaryAUROC

from medssl.backbones import Backbone, EncoderDecoder, build_backbone
from medssl.evaluation.overlays import SegmentationOverlay
from medssl.finetune.decoders import SegmentationNet
from medssl.finetune.pretrained import load_backbone_weights, pretrained_parameter_names, summary
from medssl.optim import skips_decay, warmup_cosine
from medssl.reliability.divergence import LossGuard, NanPolicy

log = logging.getLogger("medssl.finetune")

Mode = Literal["finetune", "frozen_encoder"]


def plain(t: Tensor) -> Tensor:
    """A MONAI ``MetaTensor`` as a plain tensor: metadata tracking through every layer costs a lot."""
    return t.as_tensor() if isinstance(t, MetaTensor) else t


def hd95(pred: Tensor, mask: Tensor) -> Tensor:
    """95th-percentile Hausdorff distance (voxels) per image and foreground class, ``(B, K-1)``.

    NaN where the class is absent from the ground truth (skipped in the means); a class that is present
    but predicted nowhere scores the image diagonal, the largest distance possible, rather than NaN.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".* is all 0, this may result in nan/inf distance")
        warnings.filterwarnings("ignore", category=FutureWarning)
        values = compute_hausdorff_distance(pred, mask, include_background=False, percentile=95)
    spatial = tuple(range(2, pred.ndim))
    missed = (mask[:, 1:].sum(spatial) > 0) & (pred[:, 1:].sum(spatial) == 0)  # (B, K-1)
    diagonal = float(torch.linalg.vector_norm(torch.tensor(pred.shape[2:], dtype=torch.float32)))
    return torch.where(missed, torch.full_like(values, diagonal), values.to(pred.device))


def encoder_modules(backbone: Backbone) -> list[nn.Module]:
    """The modules of ``backbone`` that encode: all of it, less an encoder-decoder's decoder blocks."""
    if not backbone.is_encoder_decoder:
        return [backbone]
    decoder = {id(block) for block in cast(EncoderDecoder, backbone).decoder_blocks}
    return [module for module in backbone.children() if id(module) not in decoder]


def scored_one_hot(pred: Tensor, mask: Tensor, fov: Tensor | None, classes: int) -> tuple[Tensor, Tensor]:
    """One-hot ``(B, K, *S)`` prediction and truth from label maps ``(B, 1, *S)``, as Dice and HD95 see them.

    Outside the field of view ``fov`` (bool, like ``mask``; None: everywhere inside) both are background.
    """
    if fov is not None:
        pred, mask = pred * fov, mask * fov
    return one_hot(pred, classes), one_hot(mask, classes)


class SegmentationModule(pl.LightningModule):
    """Fine-tune a (pretrained) backbone with a segmentation decoder (``medssl.finetune.decoders``).

    Training: DiceCE (softmax, one-hot targets) on patches. Validation and test: sliding-window inference
    over whole images (ROI ``roi_size``, by default the DataModule's ``patch_size``), argmax, then MONAI's
    Dice per foreground class (``val/dice_<class>``; ``val/dice`` is their mean) and 95th-percentile
    Hausdorff distance in voxels (``test/hd95``, see ``hd95``); for one foreground class also the pixel
    AUROC of its softmax probability (``val/auroc``, 200 thresholds: the retinal-vessel convention). With a
    field-of-view mask in the batch (``fov``, DRIVE), pixels outside it are set to background in both
    prediction and ground truth for Dice and HD95, so they count neither as hits nor as errors, and are left
    out of the AUROC.

    ``mode="frozen_encoder"`` is the segmentation counterpart of a linear probe: the backbone's encoder is
    frozen (and kept in eval mode), only the decoder and head train, so the score measures the encoder's
    features rather than what fine-tuning makes of them. An encoder-decoder backbone (``unet``) trains its
    own decoder blocks from their (pretrained) weights.

    Args:
        backbone: registered backbone name; encoder-decoder backbones (``unet``) keep their own decoder.
        backbone_kwargs: the backbone builder's options; ViTs need ``img_size`` = the patch size.
        spatial_dims: 2 or 3; linked from ``data.spatial_dims``.
        in_channels: image channels; linked from ``data.in_channels``.
        num_classes: output classes including background (mask values ``0 .. num_classes - 1``).
        class_names: names of the foreground classes for the logs; default ``1 .. num_classes - 1``.
        pretrained: a pretraining run dir, checkpoint or export dir; ``none`` trains from scratch.
        mode: ``finetune`` (the whole network) or ``frozen_encoder`` (decoder and head only).
        feature_size: channels of the decoder's finest level (CNN and ViT decoders).
        lr: peak learning rate of the decoder, reached after the warm-up; cosine decay afterwards.
        backbone_lr_scale: the learning rate of the pretrained backbone tensors as a fraction of ``lr``;
            tensors at their fresh init (from scratch, or decoder blocks the pretraining did not train) and
            the head train at ``lr``, so a scratch baseline is not handicapped.
        weight_decay: decoupled weight decay; biases, norms and embeddings get none.
        warmup_epochs: linear warm-up length in epochs (fractions allowed).
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        roi_size: sliding-window ROI; default the DataModule's ``patch_size``.
        sw_batch_size: windows per forward pass in sliding-window inference.
        sw_overlap: overlap of neighbouring windows.
        val_hd95: also compute HD95 during validation (always in test).
        save_overlays: after each validation, write ``<run dir>/overlays/epoch_XXX.png`` (image, ground
            truth, prediction) and log it to the loggers that take images.
        nan_policy: on a NaN / Inf loss, ``stop`` (the last good checkpoint is kept) or ``skip`` the batch.
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        pretrained: str | None = None,
        mode: Mode = "finetune",
        feature_size: int = 16,
        lr: float = 1e-3,
        backbone_lr_scale: float = 0.1,
        weight_decay: float = 1e-5,
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 4,
        sw_overlap: float = 0.25,
        val_hd95: bool = True,
        save_overlays: bool = True,
        nan_policy: NanPolicy = "stop",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        names = class_names or [str(c) for c in range(1, num_classes)]
        if len(names) != num_classes - 1:
            raise ValueError(f"class_names needs {num_classes - 1} foreground names, got {names}")
        if mode not in get_args(Mode):
            raise ValueError(f"mode must be one of {', '.join(get_args(Mode))}, got {mode!r}")
        self.save_hyperparameters()
        self.class_names = names
        net_backbone = build_backbone(
            backbone, spatial_dims=spatial_dims, in_channels=in_channels, **(backbone_kwargs or {})
        )
        self.load_report = load_backbone_weights(net_backbone, pretrained)
        self._pretrained = pretrained_parameter_names(self.load_report)
        log.info(summary(self.load_report))
        self.net = SegmentationNet(net_backbone, num_classes=num_classes, feature_size=feature_size)
        self.frozen = encoder_modules(net_backbone) if mode == "frozen_encoder" else []
        for module in self.frozen:
            module.requires_grad_(False)
        self.roi_size = tuple(roi_size) if roi_size else None
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
        self.hd95: list[Tensor] = []  # (B, K-1) per batch
        self.auroc = BinaryAUROC(thresholds=200) if num_classes == 2 else None
        self.loss_guard = LossGuard(nan_policy)

    @property
    def backbone(self) -> torch.nn.Module:
        return self.net.backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, num_classes, *S)

    # --- steps -------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        for module in self.frozen:
            module.eval()  # frozen: norm statistics and dropout stay those of inference

    def setup(self, stage: str) -> None:
        if self.roi_size is None:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
            if datamodule is None or not hasattr(datamodule, "patch_size"):
                raise ValueError("roi_size is unset and the DataModule has no patch_size; set model.roi_size")
            self.roi_size = tuple(datamodule.patch_size)
        assert self.roi_size is not None
        self.net.check_size(self.roi_size)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        mask = self._checked_mask(plain(batch["mask"]))
        loss = self.loss(self(plain(batch["image"])), mask)
        if self.loss_guard.check(self, {"loss": loss}) is None:
            return None  # non-finite, skipped (nan_policy skip)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=mask.shape[0])
        return loss

    def configure_callbacks(self) -> list[pl.Callback]:
        return [SegmentationOverlay()] if self.hparams["save_overlays"] else []

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"pred": self._evaluate("val", batch)}

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_logits(self, image: Tensor) -> Tensor:
        """Sliding-window logits ``(B, num_classes, *S)`` for whole images of any size."""
        roi = self.roi_size or tuple(image.shape[2:])
        logits = sliding_window_inference(
            image,
            roi,
            self.hparams["sw_batch_size"],
            self.net,
            overlap=self.hparams["sw_overlap"],
            mode="gaussian",
        )
        assert isinstance(logits, Tensor)
        return logits

    # --- metrics -----------------------------------------------------------------------------
    def _evaluate(self, stage: str, batch: dict[str, Tensor]) -> Tensor:
        """Log the loss, accumulate Dice (and HD95); returns the argmax prediction ``(B, 1, *S)``."""
        mask = self._checked_mask(plain(batch["mask"]))
        logits = self.predict_logits(plain(batch["image"]))
        self.log(f"{stage}/loss", self.loss(logits, mask), batch_size=mask.shape[0])
        pred = logits.argmax(dim=1, keepdim=True)  # (B, 1, *S)
        fov = plain(batch["fov"]) > 0 if "fov" in batch else None
        if self.auroc is not None:
            foreground = logits.float().softmax(dim=1)[:, 1:]  # (B, 1, *S)
            if fov is not None:
                foreground, truth = foreground[fov], mask[fov]
            else:
                truth = mask
            self.auroc.update(foreground.flatten(), truth.flatten().long())
        pred_1h, mask_1h = scored_one_hot(pred, mask, fov, self.hparams["num_classes"])
        self.dice(pred_1h, mask_1h)
        if stage == "test" or self.hparams["val_hd95"]:
            self.hd95.append(hd95(pred_1h, mask_1h))
        return pred

    def _log_metrics(self, stage: str) -> None:
        per_class = self.dice.aggregate()  # (K-1,), NaN where no image had that class
        assert isinstance(per_class, Tensor)
        self.dice.reset()
        self.log(f"{stage}/dice", per_class.nanmean(), sync_dist=True)
        if self.auroc is not None:
            self.log(f"{stage}/auroc", self.auroc.compute(), sync_dist=True)
            self.auroc.reset()
        for name, value in zip(self.class_names, per_class, strict=True):
            self.log(f"{stage}/dice_{name}", value, sync_dist=True)
        if self.hd95:
            per_class_hd = torch.cat(self.hd95).nanmean(dim=0)  # (K-1,)
            self.hd95.clear()
            self.log(f"{stage}/hd95", per_class_hd.nanmean(), sync_dist=True)
            for name, value in zip(self.class_names, per_class_hd, strict=True):
                self.log(f"{stage}/hd95_{name}", value, sync_dist=True)

    def _checked_mask(self, mask: Tensor) -> Tensor:
        classes = self.hparams["num_classes"]
        low, high = float(mask.min()), float(mask.max())
        if low < 0 or high >= classes:
            raise ValueError(
                f"mask values span {low:g}..{high:g} but num_classes={classes} allows 0..{classes - 1}; "
                "for 0/255 masks set data.mask_threshold (e.g. 128), or map values with data.label_map"
            )
        return mask

    # --- optimiser ---------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self._param_groups(), lr=self.hparams["lr"])
        schedule = warmup_cosine(
            optimizer,
            self.trainer,
            warmup_epochs=self.hparams["warmup_epochs"],
            min_lr_ratio=self.hparams["min_lr_ratio"],
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def _param_groups(self) -> list[dict[str, Any]]:
        """Pretrained tensors at ``lr * backbone_lr_scale``, the rest at ``lr``; biases, norms, embeddings
        undecayed."""
        lr, scale, decay = self.hparams["lr"], self.hparams["backbone_lr_scale"], self.hparams["weight_decay"]
        groups: dict[tuple[bool, bool], list[Tensor]] = {}
        for name, param in self.net.named_parameters():
            if param.requires_grad:
                plain = skips_decay(name, param)
                groups.setdefault((name in self._pretrained, plain), []).append(param)
        return [
            {
                "params": params,
                "lr": lr * (scale if pretrained else 1.0),
                "weight_decay": 0.0 if plain else decay,
            }
            for (pretrained, plain), params in groups.items()
        ]
