"""Batched scoring primitives shared by every recommender: top-k selection and lists of item codes."""
