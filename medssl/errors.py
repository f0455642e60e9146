"""The errors that are the user's to fix: the CLI prints them as one message, without a traceback."""

from medssl.commands.pretrain import RunDirError
from medssl.data.caching import CacheTooLargeError
from medssl.data.validation import DatalistError

USER_ERRORS: tuple[type[Exception], ...] = (DatalistError, CacheTooLargeError, RunDirError)
