"""The published store: run log, publishing, bulk loading, the Parquet mirror, the lock, the fast lookup.

Kept free of imports: the lookup path loads only what it needs.
"""
