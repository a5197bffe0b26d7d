"""Recommenders on one surface (fit / recommend / score on codes): the baselines and the two-stage model."""
