"""Offline quality: ranking metrics, the evaluation protocol on the temporal splits, the quality gate."""
