"""Helpers shared by test modules (fixtures that need them are in the conftest files)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from visiontune.data.synthetic import make_shapes_dataset


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Compute like torchrun workers and subprocesses (``OMP_NUM_THREADS=1``): float sums then agree to the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def shapes(root: Path, *, num_classes: int = 3, train_per_class: int = 6, val_per_class: int = 3, image_size: int = 32,
           seed: int = 0) -> Path:
    """The generated shapes dataset the tests train on (``root/train/<class>/``, ``root/val/<class>/``).

    The defaults are the tiny dataset most tests use: 3 classes, 6 training and 3 validation images each, 32 px.
    """
    return make_shapes_dataset(root, num_classes=num_classes, train_per_class=train_per_class,
                               val_per_class=val_per_class, image_size=image_size, seed=seed)


def evaluate_one_by_one(task: Any, dataset: Any, model: torch.nn.Module) -> dict[str, float]:
    """The task's metrics of ``model`` on ``dataset``, fed one image at a time (batch 1, as the reference tools)."""
    evaluator = task.build_evaluator(dataset)
    evaluator.reset()
    with torch.no_grad():
        for index in range(len(dataset)):
            image, target = dataset[index]
            evaluator.update(model(image[None]), [target])
    return evaluator.compute()


def set_up_with_nan_at_step(trainer: Any, monkeypatch: Any, step: int) -> None:
    """Run ``trainer.setup()`` and make the training batch of optimizer step ``step`` NaN (``fit`` then skips
    the setup it already did)."""
    trainer.setup()
    original = trainer.task.prepare_train_batch
    monkeypatch.setattr(trainer.task, "prepare_train_batch",
                        lambda images, targets: original(images * float("nan"), targets)
                        if trainer.state.step == step else original(images, targets))
    monkeypatch.setattr(trainer, "setup", lambda: None)


def train(config: Any, hooks: Iterable[Any] = ()) -> Any:
    """The engine's loop alone (:class:`~visiontune.engine.trainer.Trainer`): ``visiontune.train`` without the report
    writer that it adds when ``train.report`` is on (tests that do not look at report.html save its seconds)."""
    from visiontune.engine.trainer import Trainer

    return Trainer(config, hooks=list(hooks)).fit()


def script_metric(monkeypatch: Any, task_class: type, key: str, values: Sequence[float]) -> list[float]:
    """Make metric ``key`` (the evaluator's name, ``top1``, ``ap``...) of every evaluator that ``task_class`` builds
    report the scripted ``values``, one per evaluation, in order; after the last one, the last again.

    The other metrics stay real. Tests about checkpoints, hooks and reports use it to force which epoch wins: a real
    run's best epoch depends on float rounding, which differs between CPUs and kernel paths. Returns the values handed
    out so far (the evaluations of one run, the baseline first).
    """
    remaining: list[float] = list(values)
    handed: list[float] = []
    build = task_class.build_evaluator

    def scripted_build(self: Any, dataset: Any) -> Any:
        evaluator = build(self, dataset)
        compute = evaluator.compute

        def scripted_compute() -> dict[str, float]:
            metrics = compute()
            if key not in metrics:
                raise KeyError(f"the evaluator has no metric {key!r}: {sorted(metrics)}")
            handed.append(remaining.pop(0) if remaining else handed[-1])
            return {**metrics, key: handed[-1]}

        evaluator.compute = scripted_compute
        return evaluator

    monkeypatch.setattr(task_class, "build_evaluator", scripted_build)
    return handed


class FixedMaskModel(torch.nn.Module):
    """A stand-in Mask R-CNN: one detection per image, of class ``label``, score 0.8, the left half of the image as its
    box and mask (probability 0.9); eval-mode outputs (``list[dict]``: boxes xyxy pixels, labels, scores, masks
    ``[1, 1, H, W]``)."""

    def __init__(self, label: int = 1) -> None:
        super().__init__()
        self.label = label

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            height, width = image.shape[-2:]
            masks = torch.zeros(1, 1, height, width)
            masks[..., : width // 2] = 0.9
            outputs.append({"boxes": torch.tensor([[0.0, 0.0, width / 2, float(height)]]),
                            "labels": torch.tensor([self.label]), "scores": torch.tensor([0.8]), "masks": masks})
        return outputs


def identity_onnx_model(path: Path) -> Path:
    """Write a one-node ONNX model (``y = x``) at ``path``: a file that is an ONNX model, not weights."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, producer_name="pytorch"), str(path))
    return path
