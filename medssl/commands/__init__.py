"""The ``medssl`` sub-commands, one module each."""
