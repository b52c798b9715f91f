"""Training and its measurement: the loop, transforms, run folders, distillation, several
processes (DDP), and evaluation (metrics, calibration of a checkpoint).

``from fer_utils import train`` gives this package (Python records a sub-package as an attribute
of its parent, under the same name as the public function), so the package is callable:
``train(config, train_set, val_set, out_dir)`` is :func:`fer_utils.train.loop.train`, and
``import fer_utils.train.loop`` works as for any package."""

from __future__ import annotations

import sys
import types
from typing import Any


class _TrainPackage(types.ModuleType):
    """This package, callable as :func:`fer_utils.train.loop.train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from fer_utils.train.loop import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _TrainPackage
