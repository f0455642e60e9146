"""The errors that are the user's to fix, and the ways a run stops early: the CLI prints them as one message,
without a traceback."""

from medssl.commands.run_cli import RunDirError, UsageError
from medssl.data.caching import CacheTooLargeError
from medssl.data.validation import DatalistError
from medssl.export.files import ExportError
from medssl.finetune.pretrained import PretrainedWeightsError
from medssl.reliability.checkpoints import CheckpointError
from medssl.reliability.divergence import DivergenceError
from medssl.reliability.preemption import Preempted

USER_ERRORS: tuple[type[Exception], ...] = (
    DatalistError,
    CacheTooLargeError,
    RunDirError,
    ExportError,
    PretrainedWeightsError,
    UsageError,
    CheckpointError,
)

#: A run that stopped early, cleanly: each carries its ``exit_code`` (divergence 1, a signal 128 + signum).
RUN_STOPS: tuple[type[Exception], ...] = (DivergenceError, Preempted)
