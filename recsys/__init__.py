"""recsys: a nightly two-stage recommender for experiences.

Importing the package imports nothing heavy: it only sets the environment that TensorFlow reads
when (and if) a training command imports it later.
"""

import os

# tensorflow-recommenders 0.7.7 needs Keras 2 (the tf-keras package); TensorFlow 2.21 picks
# Keras 3 unless this is set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise for an operator.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
