"""Task registry: ``create_task(config)`` returns the task named by ``config.task``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from visiontune.config import ConfigError
from visiontune.registry import Registry, suggest

if TYPE_CHECKING:
    from visiontune.config import Config
    from visiontune.tasks.base import Task

TASKS: Registry[str] = Registry("task")
"""Task name -> ``module:Class`` path, imported on first use (keeps ``import visiontune`` light)."""
TASKS.register("classification")("visiontune.tasks.classification:ClassificationTask")
TASKS.register("face_detection")("visiontune.tasks.face_detection:FaceDetectionTask")
TASKS.register("instance_segmentation")("visiontune.tasks.instance_segmentation:InstanceSegmentationTask")


def get_task_class(name: str) -> type[Task]:
    """Import and return the task class registered as ``name`` (did-you-mean error when unknown)."""
    import importlib

    module_name, class_name = TASKS.get(name).split(":")
    return getattr(importlib.import_module(module_name), class_name)


def validate_task_name(name: str) -> None:
    """Raise :class:`~visiontune.config.ConfigError` naming the ``task`` key when ``name`` is not registered."""
    if name not in TASKS:
        raise ConfigError(f"task: unknown task {name!r}{suggest(name, TASKS.names())}; "
                          f"valid: {', '.join(TASKS.names())}")


def create_task(config: Config) -> Task:
    """Instantiate the task of ``config.task``.

    Raises:
        ConfigError: ``config.task`` is not a registered task (the message names the key and the valid names).
    """
    validate_task_name(config.task)
    return get_task_class(config.task)(config)
