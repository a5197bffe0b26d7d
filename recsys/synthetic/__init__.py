"""A generator of synthetic exports in the real export's format (the sample in data/ comes from it)."""
