"""``medssl data inspect``: what a dataset holds, a preview grid and, for a pretraining recipe, its views."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from monai.transforms import Compose

from medssl.data.datalist import Item, describe_source, load_datalist
from medssl.data.inspect import Loaded, Report, inspect_items, preview_grid
from medssl.data.paths import resolve_source
from medssl.data.preprocess import check_channels, preprocess_transform
from medssl.data.validation import DatalistError
from medssl.evaluation.figures import save_png
from medssl.evaluation.views import views_figure

DATA_USAGE = """usage: medssl data inspect [source] [--recipe R] [--out DIR] [--max-items N] [--data.<key> V]

sub-commands:
  inspect   counts, shapes, spacings, intensities, labels, problems; preview.png (and views.png for a recipe)
"""

#: Data options understood without a recipe (with one, every ``--data.*`` option of the recipe works).
DATA_OPTIONS = {
    "spatial_dims": "2 or 3 (default: inferred from the first images)",
    "in_channels": "channels every image must have (checked on one image)",
    "intensity": "intensity preset, to report the range the network sees (e.g. ct, mr, xray, minmax)",
    "ct_window": "HU window for --data.intensity ct: a name (soft_tissue, lung, ...) or [lower, upper]",
    "spacing": "resample 3D volumes to this spacing (mm) before the intensity preset, e.g. [1, 1, 1]",
    "spatial_size": "centre pad or crop to this size after the preset, e.g. [96, 96, 96]",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medssl data inspect",
        description="Describe a dataset before training on it: every item is checked (headers), a seeded "
        "random sample of --max-items is loaded for the statistics. Writes report.json and preview.png "
        "(3D: middle slices, masks in colour) and, given --recipe, views.png: the augmented views the "
        "recipe's method will train on.",
    )
    parser.add_argument(
        "source",
        nargs="?",
        help="folder, CSV, JSON datalist, Decathlon dataset.json (or its folder) or MedMNIST .npz; "
        "default: the recipe's data.source",
    )
    parser.add_argument(
        "--recipe", help="a pretraining recipe (recipes/pretrain/*.yaml): its data options and its views"
    )
    parser.add_argument("--out", help="output folder (default: runs/inspect/<source name>)")
    parser.add_argument("--max-items", type=int, default=100, help="items loaded for the statistics")
    parser.add_argument("--preview", type=int, default=16, help="images in preview.png")
    parser.add_argument("--views", type=int, default=4, help="images in views.png (with --recipe)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and of the views")
    for key, text in DATA_OPTIONS.items():
        parser.add_argument(f"--data.{key}", dest=key, default=None, help=text)
    return parser


def run_data(args: list[str]) -> Path | None:
    """``medssl data <sub-command>``; only ``inspect`` so far."""
    if args[:1] == ["inspect"]:
        return run(args[1:])
    print(DATA_USAGE, file=sys.stdout if args[:1] in (["-h"], ["--help"]) else sys.stderr)
    if args[:1] in (["-h"], ["--help"]):
        return None
    raise SystemExit(2)


def run(args: list[str]) -> Path:
    """Inspect, print the report, write ``report.json``, ``preview.png`` (and ``views.png``); the folder."""
    parser = build_parser()
    options, rest = parser.parse_known_args(args)
    if options.max_items < 1:
        parser.error("--max-items must be at least 1")
    given = {key: getattr(options, key) for key in DATA_OPTIONS if getattr(options, key) is not None}
    if options.recipe:
        datamodule, model = _from_recipe(parser, options.recipe, options.source, given, rest)
        source = str(datamodule.source)
        spatial_dims: int | None = datamodule.spatial_dims
        in_channels: int | None = datamodule.in_channels
        preprocess = datamodule.preprocess()
        described = f"the recipe's preprocessing ({_describe(vars(datamodule))})"
    else:
        if rest:
            parser.error(f"unrecognised arguments {' '.join(rest)} (model and trainer options need --recipe)")
        if not options.source:
            parser.error("give a source (a folder, CSV, JSON datalist, dataset.json or .npz) or --recipe")
        source, model = options.source, None
        values = {key: yaml.safe_load(value) for key, value in given.items()}
        spatial_dims, in_channels = values.get("spatial_dims"), values.get("in_channels")
        preprocess = _preprocess(values, spatial_dims) if "intensity" in values else None
        described = f"preprocessing ({_describe(values)})"
    path = resolve_source(source)
    items = datalist(path)
    report, loaded = inspect_items(
        items,
        source=describe_source(path, items),
        spatial_dims=spatial_dims,
        max_items=options.max_items,
        seed=options.seed,
        preprocess=Compose(preprocess.transforms[1:]) if preprocess is not None else None,  # past loading
        preprocessing=described,
    )
    if in_channels is not None and preprocess is not None and loaded:
        _add_channel_problem(report, preprocess, loaded[0], int(in_channels), source)
    out = Path(options.out or Path("runs") / "inspect" / _stem(path))
    written = _write(report, loaded, out, preview=options.preview)
    if model is not None and preprocess is not None and loaded:
        figure = _views(model, preprocess, _spread(loaded, options.views), seed=options.seed)
        written.append(save_png(figure, out / "views.png"))
    print("\n".join(report.lines()))
    print("wrote: " + ", ".join(str(p) for p in written))
    return out


def datalist(path: Path) -> list[Item]:
    """``load_datalist``, except that image/mask folder pairs (MSD ``images/`` + ``labels/``, DRIVE) are
    read as pairs, the way segmentation fine-tuning reads them, so their masks are inspected too."""
    from medssl.finetune.seg_data import PAIRED_LAYOUTS, segmentation_datalist

    paired = any((path / images).is_dir() and (path / masks).is_dir() for images, masks, *_ in PAIRED_LAYOUTS)
    if path.is_dir() and not (path / "dataset.json").is_file() and paired:
        return segmentation_datalist(path)
    return load_datalist(path)


def _from_recipe(
    parser: argparse.ArgumentParser, recipe: str, source: str | None, given: dict[str, str], rest: list[str]
) -> tuple[Any, Any]:
    """The recipe's DataModule and method, parsed exactly as ``medssl pretrain`` parses them."""
    from medssl.commands import pretrain

    content = yaml.safe_load(Path(recipe).read_text()) if Path(recipe).is_file() else None
    if not isinstance(content, dict):
        parser.error(f"--recipe {recipe}: not a readable YAML recipe")
    if "task" in content or "class_path" not in (content.get("model") or {}):
        parser.error(f"--recipe {recipe}: not a pretraining recipe (expected model.class_path, no task)")
    overrides = [arg for key, value in given.items() for arg in (f"--data.{key}", value)]
    args = ["--config", recipe, *(["--data.source", source] if source else []), *overrides, *rest]
    cli = pretrain.build_cli([*args, "--trainer.logger", "false"])
    return cli.datamodule, cli.model


def _preprocess(values: dict[str, Any], spatial_dims: int | None) -> Compose:
    return preprocess_transform(
        spatial_dims=int(spatial_dims or 2),
        intensity=str(values["intensity"]),
        ct_window=values.get("ct_window") or "soft_tissue",
        spacing=values.get("spacing"),
        spatial_size=values.get("spatial_size"),
    )


def _describe(settings: dict[str, Any]) -> str:
    keys = ("intensity", "ct_window", "spacing", "spatial_size")
    shown = {k: settings.get(k) for k in keys if settings.get(k) is not None}
    if shown.get("intensity") != "ct":
        shown.pop("ct_window", None)
    return ", ".join(f"{k} {v}" for k, v in shown.items())


def _add_channel_problem(
    report: Report, preprocess: Compose, first: Loaded, channels: int, source: str
) -> None:
    try:
        check_channels(preprocess, first.item, channels, source)
    except DatalistError as error:
        report.problems += [str(problem) for problem in error.problems]


def _views(model: Any, preprocess: Compose, loaded: list[Loaded], *, seed: int) -> Any:
    """The method's own views of each image (after the recipe's preprocessing), seeded."""
    views = model.view_transform()
    views.set_random_state(seed)
    steps = Compose(preprocess.transforms[1:])
    inputs, samples = [], []
    for one in loaded:
        image = steps({"image": one.image})["image"]
        extra = {"position": one.item["position"]} if "position" in one.item else {}
        inputs.append(image)
        samples.append(views({"image": image, **extra}))
    file_axes = isinstance(loaded[0].item["image"], str)
    return views_figure(samples, inputs=inputs, file_axes=file_axes, captions=[o.name for o in loaded])


def _write(report: Report, loaded: list[Loaded], out: Path, *, preview: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.json"
    partial = out / ".report.json.partial"
    partial.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    partial.replace(report_path)
    written = [report_path]
    if loaded and preview > 0:
        spread = _spread(loaded, preview)
        values = [int(v) for v in report.mask_classes]
        written.append(save_png(preview_grid(spread, mask_values=values), out / "preview.png"))
    return written


def _spread(loaded: list[Loaded], count: int) -> list[Loaded]:
    """``count`` items evenly spread over the sample (a datalist often starts with one class or split)."""
    return loaded[:: max(1, len(loaded) // max(count, 1))][:count]


def _stem(path: Path) -> str:
    name = path.name if path.is_dir() or path.name != "dataset.json" else path.parent.name
    for suffix in (".nii.gz", ".npz", ".csv", ".json"):
        name = name.removesuffix(suffix)
    return name or "data"
