"""``medssl evaluate``: kNN and linear-probe evaluation of a pretrained backbone on frozen features.

It reads a classification fine-tuning recipe (its data and backbone), loads ``--model.pretrained`` with the
same checks as ``medssl finetune``, and writes ``frozen_metrics.json`` into the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytorch_lightning.cli import LightningArgumentParser

from medssl.commands.finetune import FinetuneCLI, build, recipe_task
from medssl.commands.run_cli import UsageError
from medssl.finetune.classification import ClassificationModule

#: Features must not depend on the training augmentation: forced after the user's arguments.
NO_AUGMENTATION = [
    "--data.flip_prob",
    "0",
    "--data.intensity_jitter",
    "0",
    "--data.balanced_sampling",
    "false",
]


class EvaluateCLI(FinetuneCLI):
    """A classification recipe plus the kNN options; the trainer is only used for its run directory."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--knn_k", type=int, default=20, help="neighbours of the kNN classifier")
        parser.add_argument("--knn_temperature", type=float, default=0.1, help="kNN similarity temperature")


def run(args: list[str], *, verbose: bool = True) -> Path:
    """Evaluate; prints the metrics (unless ``verbose`` is false) and returns the run directory."""
    from medssl.evaluation.frozen import frozen_metrics, split_features
    from medssl.finetune.cls_data import ClassificationDataModule

    if recipe_task(args) != "classification":
        raise UsageError("medssl evaluate needs a classification recipe (recipes/finetune/cls_*.yaml)")
    defaults = ["--trainer.default_root_dir", "runs/evaluate"]
    cli = build(
        EvaluateCLI,
        "evaluate",
        "finetune",
        [*defaults, *args, *NO_AUGMENTATION],
        model_class=ClassificationModule,
        datamodule_class=ClassificationDataModule,
    )
    model, data = cli.model, cli.datamodule
    features = split_features(model.backbone, data)
    metrics = frozen_metrics(
        features,
        data.num_classes,
        multi_label=data.multi_label,
        knn_k=cli.config.knn_k,
        knn_temperature=cli.config.knn_temperature,
    )
    run_dir = Path(cli.trainer.default_root_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cli.parser.save(cli.config, run_dir / "config.yaml", skip_none=False, overwrite=True)
    sizes = {name: len(labels) for name, (_, labels) in features.items()}
    report = {"pretrained": model.load_report.source, "images": sizes, "metrics": metrics}
    (run_dir / "frozen_metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    if not verbose:
        return run_dir
    print(f"run directory: {run_dir.resolve()}")
    print(f"frozen features of {model.load_report.source} ({sizes['train']} training images):")
    for key in ("knn/test/auroc", "knn/test/accuracy", "linear/test/auroc", "linear/test/accuracy"):
        print(f"  {key}: {metrics[key]:.4f}")
    return run_dir
