"""visiontune: fine-tune pretrained vision models on your own data and measure them honestly.

Python API (imported lazily, so ``import visiontune`` stays fast)::

    import visiontune
    config = visiontune.load_config("configs/classification/mobilenetv2_100.yaml", ["optim.lr=0.002"])
    result = visiontune.train(config)  # or train(config, hooks=[MyHook()]) with a visiontune.HookBase subclass
    metrics = visiontune.evaluate(config, checkpoint=result.run_dir / "best.pt").metrics
"""

from __future__ import annotations

import warnings
from typing import Any

from visiontune.utils.lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "train": "visiontune.api",
    "evaluate": "visiontune.api",
    "predict": "visiontune.api",
    "check_data": "visiontune.api",
    "load_config": "visiontune.config",
    "Config": "visiontune.config",
    "Trainer": "visiontune.engine.trainer",
    "HookBase": "visiontune.engine.hooks",
}

_DEPRECATED = {"Hook": "HookBase"}
"""Earlier names, still answered with a ``DeprecationWarning``."""

_lazy_getattr = lazy_attributes(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        warnings.warn(f"visiontune.{name} is deprecated: use visiontune.{_DEPRECATED[name]}", DeprecationWarning,
                      stacklevel=2)
        name = _DEPRECATED[name]
    return _lazy_getattr(name)


__all__ = ["__version__", *_LAZY]
