"""visiontune: fine-tune pretrained vision models on your own data and measure them honestly.

Python API (imported lazily, so ``import visiontune`` stays fast)::

    import visiontune
    config = visiontune.load_config("configs/classification/mobilenetv2_100.yaml", ["optim.lr=0.002"])
    result = visiontune.train(config)  # or train(config, hooks=[MyHook()]) with a visiontune.HookBase subclass
    metrics = visiontune.evaluate(config, checkpoint=result.run_dir / "best.pt").metrics
"""

from __future__ import annotations

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
    "Hook": "visiontune.engine.hooks",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["__version__", *_LAZY]
