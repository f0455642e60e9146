"""The errors that are the user's to fix: the CLI prints them as one message, without a traceback."""

from medssl.commands.run_cli import RunDirError, UsageError
from medssl.data.caching import CacheTooLargeError
from medssl.data.validation import DatalistError
from medssl.export.files import ExportError
from medssl.finetune.pretrained import PretrainedWeightsError

USER_ERRORS: tuple[type[Exception], ...] = (
    DatalistError,
    CacheTooLargeError,
    RunDirError,
    ExportError,
    PretrainedWeightsError,
    UsageError,
)
