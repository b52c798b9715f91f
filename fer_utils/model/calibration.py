"""Temperature scaling (Guo et al., 2017): one number that makes a model's confidences honest.

A network trained with cross-entropy is usually over- or under-confident: among faces it calls
"happy, 0.9", far fewer or more than 90 % are happy. Dividing its logits by a temperature ``T``
fitted on held-out faces (minimum negative log-likelihood) fixes most of that without changing
a single prediction: ``T > 1`` softens the probabilities, ``T < 1`` sharpens them, and the argmax
stays where it was. ``fer calibrate`` fits ``T`` on the selection split and stores it in the
checkpoint's metadata; :func:`fer_utils.model.assembly.model_from_checkpoint` then wraps the model
in :class:`TemperatureScaled`, so evaluation, the Predictor, ONNX and the browser demo all
show calibrated probabilities.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fer_utils.core.errors import FERConfigError
from fer_utils.core.metadata import TEMPERATURE_RANGE


class TemperatureScaled(nn.Module):
    """``model``'s logits divided by ``temperature``: the same predictions, calibrated confidences.

    The temperature is a buffer, so it is part of ``state_dict()`` (the ONNX cache key changes
    with it) and of every exported graph.
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        check_temperature(temperature)
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def base_model(model: nn.Module) -> nn.Module:
    """The network inside a :class:`TemperatureScaled` wrapper (or ``model`` itself): what
    Grad-CAM hooks into and what an ensemble keeps as a member."""
    return model.model if isinstance(model, TemperatureScaled) else model


def check_temperature(value: object) -> float:
    """``value`` as a temperature, or FERConfigError saying the allowed range."""
    low, high = TEMPERATURE_RANGE
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high):
        raise FERConfigError(f"temperature must be a number from {low} to {high}, got {value!r}")
    return float(value)


def scaled_probabilities(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: what the model's probabilities become at ``temperature`` (the log
    of a softmax differs from the logits by a constant per row, which softmax ignores)."""
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-30, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimizes the NLL of ``probabilities`` (N, C) on ``labels`` (N,).

    A one-dimensional convex problem in ``log T``: scipy's bounded Brent search solves it to
    three decimals in a few dozen evaluations.
    """
    from scipy.optimize import minimize_scalar
    from sklearn.metrics import log_loss  # the NLL EvaluationReport reports

    labels = np.asarray(labels)
    if len(labels) < 2 or len(labels) != len(probabilities):
        raise FERConfigError(
            f"fitting a temperature needs at least 2 faces with one label each, got {len(probabilities)} "
            f"probability rows and {len(labels)} labels"
        )
    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    classes = np.arange(np.asarray(probabilities).shape[1])
    fit = minimize_scalar(
        lambda log_t: log_loss(labels, scaled_probabilities(probabilities, math.exp(log_t)), labels=classes),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return round(math.exp(float(fit.x)), 4)
