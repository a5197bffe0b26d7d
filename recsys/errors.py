"""The errors a user can cause and fix: the CLI turns these into one line and a non-zero exit."""


class RecsysError(Exception):
    """Base of every user-facing error (bad input, missing store, unusable option)."""


class DataError(RecsysError):
    """The interactions export cannot be used as it is; the message names file, row and column."""


class StoreError(RecsysError):
    """The published store is missing, unreadable or cannot be written."""


class OptionError(RecsysError):
    """An option of a run cannot be used (out of range, contradicting another, unknown value)."""
