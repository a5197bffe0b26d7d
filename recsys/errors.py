"""The errors a user can cause and fix: the CLI turns these into one line and a non-zero exit."""


class RecsysError(Exception):
    """Base of every user-facing error (bad input, missing store, unusable option)."""

    #: Whether trying again may help by itself (a dropped connection, a busy database, a file
    #: caught mid-replacement); the nightly flow retries exactly these.
    transient = False


class DataError(RecsysError):
    """The interactions export cannot be used as it is; the message names file, row and column."""


class ExportChanged(DataError):
    """The export changed on disk while it was being read: reading it again may succeed."""

    transient = True


class StoreError(RecsysError):
    """The published store is missing, unreadable or cannot be written."""


class StoreUnavailable(StoreError):
    """The store's database could not be reached, dropped the connection or was busy."""

    transient = True


class ListsUnhealthy(RecsysError):
    """The new lists failed the health check before the swap (``recsys.scoring.health``): the
    run fails and nothing published is replaced."""


class OptionError(RecsysError):
    """An option of a run cannot be used (out of range, contradicting another, unknown value)."""
