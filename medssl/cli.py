"""``medssl <command>``: dispatch to the sub-commands; user errors become one clear message."""

from __future__ import annotations

import difflib
import sys

from medssl import __version__

USAGE = """usage: medssl <command> [options]

commands:
  pretrain   self-supervised pretraining: medssl pretrain --config recipes/pretrain/<recipe>.yaml
  finetune   fine-tuning, then test metrics: medssl finetune --config recipes/finetune/<recipe>.yaml
  evaluate   kNN + linear probe on frozen features: medssl evaluate --config <classification recipe>
  compare    pretrained vs scratch over label fractions x seeds: medssl compare --config <recipe> ...
  export     pretrained weights for other tools: medssl export <run dir> --out <dir> [--format ...]
  data       look at a dataset first: medssl data inspect <source> [--recipe recipes/pretrain/<recipe>.yaml]
  demo       offline demo on real anatomy (MNI152 brain template) shipped with nilearn
  list       registered methods, backbones and intensity presets

Run `medssl <command> --help` for a command's options.
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medssl`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if args[0] == "--version":
        print(f"medssl {__version__}")
        return 0
    command, rest = args[0], args[1:]
    commands = {
        "pretrain": _pretrain,
        "finetune": _finetune,
        "evaluate": _evaluate,
        "compare": _compare,
        "export": _export,
        "data": _data,
        "demo": _demo,
        "list": _list,
    }
    if command not in commands:
        close = difflib.get_close_matches(command, commands, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"medssl: unknown command {command!r}{hint}\n\n{USAGE}", file=sys.stderr)
        return 2
    from medssl.errors import RUN_STOPS, USER_ERRORS
    from medssl.logging_setup import quiet_third_party

    quiet_third_party()

    try:
        commands[command](rest)
    except USER_ERRORS as err:
        print(f"medssl {command}: error: {err}", file=sys.stderr)
        return 2
    except RUN_STOPS as err:
        print(f"medssl {command}: {err}", file=sys.stderr)
        return int(getattr(err, "exit_code", 1))
    return 0


def _pretrain(args: list[str]) -> None:
    from medssl.commands.pretrain import run

    run(args)


def _finetune(args: list[str]) -> None:
    from medssl.commands.finetune import run

    run(args)


def _evaluate(args: list[str]) -> None:
    from medssl.commands.evaluate import run

    run(args)


def _compare(args: list[str]) -> None:
    from medssl.commands.compare import run

    run(args)


def _export(args: list[str]) -> None:
    from medssl.commands.export import run

    run(args)


def _data(args: list[str]) -> None:
    from medssl.commands.inspect import run_data

    run_data(args)


def _demo(args: list[str]) -> None:
    from medssl.commands.demo import run

    run(args)


def _list(args: list[str]) -> None:
    from medssl.backbones import list_backbones
    from medssl.methods import list_methods
    from medssl.transforms.intensity import INTENSITY_PRESETS

    print("methods:   ", ", ".join(list_methods()))
    print("backbones: ", ", ".join(list_backbones()))
    print("intensity: ", ", ".join(INTENSITY_PRESETS.names()))


if __name__ == "__main__":
    sys.exit(main())
