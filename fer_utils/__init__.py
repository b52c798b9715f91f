"""Facial expression recognition course library: data, models, training, evaluation, inference."""

__version__ = "0.1.0"
