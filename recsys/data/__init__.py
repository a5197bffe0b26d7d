"""Reading an export and the one encoded representation of its interactions."""
