"""The GPU-first loop, on the CPU: host syncs every ``train.log_every`` steps, the device prefetcher's arithmetic,
batched evaluation outputs, DDP options, ``channels_last: auto``, ``torch.compile`` and rank-0 COCO evaluation."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import visiontune
from tests.helpers import set_up_with_nan_at_step, train
from visiontune.config import load_config
from visiontune.data.prefetch import DevicePrefetcher, normalize_uint8
from visiontune.engine.build import is_conv_net, resolve_channels_last, wrap_model
from visiontune.engine.events import EventStorage
from visiontune.engine.inference import outputs_to_host
from visiontune.engine.stop import NonFiniteLossError
from visiontune.engine.trainer import Trainer
from visiontune.tasks import create_task

STEPS_PER_EPOCH = 4  # 18 images / batch 4, drop_last


def count_reductions(monkeypatch) -> list[int]:
    """Rows per reduction of the loop's losses (one host sync, one collective under DDP, each)."""
    calls: list[int] = []
    original = EventStorage.reduce

    def counting(self, rows, stop):
        calls.append(len(rows))
        return original(self, rows, stop)

    monkeypatch.setattr(EventStorage, "reduce", counting)
    return calls


# ------------------------------------------------------------------------------------------------ host syncs


def test_losses_reduced_only_at_logging_steps(tiny_config, monkeypatch):
    calls = count_reductions(monkeypatch)
    train(tiny_config("train.log_every=3", "train.eval_before=false", "data.val_split=null"))
    assert calls == [3, 1, 2, 2]  # steps 1-3 | 4 (epoch end) | 5-6 | 7-8 (epoch end)


HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "numpy")
"""The tensor methods that copy a value to the host: on a GPU, each waits for the device."""


def record_host_reads(monkeypatch) -> tuple[list[str], Any]:
    """The functions that read a tensor value on the host while a training step runs (before_step..after_step),
    and the hook that marks the steps."""
    import traceback

    reads: list[str] = []
    inside = {"step": False}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            if inside["step"]:
                reads.append(traceback.extract_stack(limit=2)[0].name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)

    class StepMarker(visiontune.HookBase):
        def before_step(self, trainer):
            inside["step"] = True

        def after_step(self, trainer, losses):
            inside["step"] = False

    return reads, StepMarker()


def test_a_training_step_reads_nothing_on_the_host_but_the_logged_losses(tiny_config, monkeypatch):
    reads, marker = record_host_reads(monkeypatch)
    train(tiny_config("train.log_every=3", "train.eval_before=false", "data.val_split=null"), hooks=[marker])
    assert reads == ["reduce"] * 4  # one read per logging step (3, 4, 7, 8), nothing in between


def test_a_face_training_step_reads_only_cpu_target_values(tmp_path, monkeypatch):
    """RetinaFace's loss reads no value (tested on meta tensors); its target check reads the values of CPU targets
    only, which is what a CPU run has (on a GPU the targets are on the device and the check reads nothing)."""
    from tests.test_cuda import task_overrides, write_faces

    config = load_config(None, [*task_overrides("face_detection", write_faces(tmp_path / "faces")), "device=cpu",
                                "train.progress=false", "train.plots=false", "train.report=false", "train.epochs=1",
                                "train.eval_before=false", "data.val_split=null", "data.num_workers=0",
                                f"project={tmp_path / 'runs'}", "train.log_every=100"])
    reads, marker = record_host_reads(monkeypatch)
    train(config, hooks=[marker])
    assert reads.count("reduce") == 1 and set(reads) == {"reduce", "validate_target"}


def test_epoch_means_bit_identical_for_any_log_every(tiny_config, monkeypatch):
    every_step = train(tiny_config("name=every", "train.log_every=1", "train.eval_before=false"))
    calls = count_reductions(monkeypatch)
    default = train(tiny_config("name=default", "train.eval_before=false"))
    assert calls == [STEPS_PER_EPOCH, STEPS_PER_EPOCH]  # log_every=20: the epochs' ends only
    for fast, slow in zip(default.history, every_step.history, strict=True):
        assert fast["train_loss"] == slow["train_loss"] and fast["train_loss_cls"] == slow["train_loss_cls"]
        assert fast["val_top1"] == slow["val_top1"]


def test_nan_policy_skip_syncs_every_step_and_skips_exactly_that_step(tiny_config, monkeypatch):
    calls = count_reductions(monkeypatch)
    trainer = Trainer(tiny_config("train.epochs=1", "train.nan_policy=skip", "train.eval_before=false"))
    set_up_with_nan_at_step(trainer, monkeypatch, 2)
    trainer.fit()
    assert calls == [1] * STEPS_PER_EPOCH
    assert trainer.train_step.skipped_steps == 1 and trainer.storage.epoch_loss_steps == STEPS_PER_EPOCH - 1
    assert math.isfinite(trainer.storage.history[0]["train_loss"])
    assert all(torch.isfinite(b).all() for b in trainer.model.buffers() if b.is_floating_point())


def test_nan_error_found_at_the_log_point_names_its_step(tiny_config, monkeypatch):
    calls = count_reductions(monkeypatch)
    trainer = Trainer(tiny_config("train.epochs=1", "train.log_every=3", "train.eval_before=false"))
    set_up_with_nan_at_step(trainer, monkeypatch, 1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 0, step 1: .*last finite loss: \d"):
        trainer.fit()
    assert calls == [3]  # found at the first logging step, step 3
    assert trainer.storage.epoch_loss_steps == 1  # only step 0 counted


def test_stop_between_logging_steps_keeps_the_epoch_sums(tiny_config):
    class StopAt(visiontune.HookBase):
        def after_step(self, trainer, losses):
            if trainer.state.step == 2:
                trainer.stop.request("test")

    trainer = Trainer(tiny_config("train.epochs=1", "train.eval_before=false"), hooks=[StopAt()])
    trainer.fit()
    checkpoint = torch.load(trainer.run_dir / "last.pt", weights_only=False)
    assert (checkpoint["step"], checkpoint["epoch_loss_steps"]) == (2, 2)  # the stop flushed the pending steps
    assert math.isfinite(checkpoint["epoch_loss_sums"]["loss"])


# ------------------------------------------------------------------------------------------------ prefetcher


def shapes_image(index: int) -> Image.Image:
    rng = np.random.default_rng(index)
    return Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))


def test_prefetcher_equals_the_cpu_transform(tiny_config):
    config = tiny_config("data.reprob=0", "data.hflip=0.5", "data.color_jitter=0.2", "data.mean=[0.4,0.5,0.6]",
                         "data.std=[0.2,0.25,0.3]")
    task = create_task(config)
    float_transform, uint8_transform = task.build_transform(train=True), task.build_transform(train=True, uint8=True)
    floats, uint8s = [], []
    for index in range(6):
        for transform, out in ((float_transform, floats), (uint8_transform, uint8s)):
            random.seed(index)
            torch.manual_seed(index)
            out.append(transform(shapes_image(index)))
    batch = torch.stack(uint8s)
    assert batch.dtype == torch.uint8
    prefetcher = DevicePrefetcher([(batch, torch.arange(6))], device="cpu", mean=(0.4, 0.5, 0.6),
                                  std=(0.2, 0.25, 0.3), channels_last=True)
    ((images, targets),) = list(prefetcher)
    assert images.is_contiguous(memory_format=torch.channels_last) and targets.tolist() == list(range(6))
    torch.testing.assert_close(images, torch.stack(floats), rtol=0, atol=1e-6)


def erased_fractions(images: torch.Tensor, value: float) -> torch.Tensor:
    return (images != value).all(dim=1).flatten(1).float().mean(dim=1)  # const mode: zeros in normalised units


def test_prefetcher_random_erasing_keeps_timm_semantics():
    from timm.data.random_erasing import RandomErasing

    torch.manual_seed(0)
    count, size = 600, 32
    batch = torch.full((count, 3, size, size), 200, dtype=torch.uint8)
    prefetcher = DevicePrefetcher([(batch, torch.zeros(count))], device="cpu", mean=(0.5,) * 3, std=(0.25,) * 3,
                                  re_prob=0.25, re_mode="const")
    ((images, _),) = list(prefetcher)
    value = (200 / 255 - 0.5) / 0.25
    on_device = erased_fractions(images, value)
    # the CPU pipeline: timm's RandomErasing on each normalised image in the worker
    cpu_erasing = RandomErasing(probability=0.25, mode="const", device="cpu")
    reference = torch.full((count, 3, size, size), value)
    in_workers = erased_fractions(torch.stack([cpu_erasing(image.clone()) for image in reference]), value)
    for fractions in (on_device, in_workers):
        hit = fractions > 0
        assert abs(hit.float().mean().item() - 0.25) < 0.06  # the probability per image
        assert fractions[hit].min() >= 0.02 * 0.8 and fractions[hit].max() <= 1 / 3 * 1.1  # area 2%-1/3, rounded
    assert on_device[on_device > 0].mean().item() == pytest.approx(in_workers[in_workers > 0].mean().item(), abs=0.03)


def test_prefetcher_refuses_float_batches():
    prefetcher = DevicePrefetcher([(torch.zeros(1, 3, 4, 4), torch.zeros(1))], device="cpu", mean=(0,) * 3,
                                  std=(1,) * 3)
    with pytest.raises(TypeError, match="uint8"):
        list(prefetcher)


def test_normalize_uint8_is_to_tensor_then_normalize():
    from torchvision.transforms import functional

    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    expected = functional.normalize(image.float().div(255), mean, std)
    got = normalize_uint8(image[None], torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))[0]
    assert torch.equal(got, expected)


def test_training_through_the_prefetcher_equals_the_cpu_path(tiny_config, monkeypatch):
    from visiontune.tasks.classification import ClassificationTask

    cpu = train(tiny_config("name=cpu", "train.eval_before=false"))
    original = ClassificationTask.device_train_dataset
    used = []

    def as_on_cuda(self, dataset, *, device):  # the CUDA choice (uint8 workers), the prefetcher on the CPU
        converted = original(self, dataset, device=torch.device("cuda"))
        used.append(converted[0][0].dtype)
        return converted

    monkeypatch.setattr(ClassificationTask, "device_train_dataset", as_on_cuda)
    prefetched = train(tiny_config("name=prefetched", "train.eval_before=false"))
    assert used == [torch.uint8]
    for a, b in zip(cpu.history, prefetched.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)


def test_device_dataset_stays_float_on_cpu_and_without_gpu_prefetch(tiny_config):
    config = tiny_config()
    task = create_task(config)
    dataset = task.build_dataset(config.data.train_split, train=True)
    assert task.device_train_dataset(dataset, device=torch.device("cpu")) is dataset
    assert task.device_prefetcher([], device=torch.device("cpu"), train=True) is None
    config.train.gpu_prefetch = False
    assert task.device_train_dataset(dataset, device=torch.device("cuda")) is dataset


# ------------------------------------------------------------------------------------------------ evaluation outputs


def test_classification_outputs_become_one_tensor_per_batch():
    logits = torch.randn(5, 3)
    batched = outputs_to_host([{"logits": row} for row in logits])
    assert isinstance(batched, torch.Tensor) and torch.equal(batched, logits)


def test_other_outputs_keep_their_structure(monkeypatch):
    outputs = [{"boxes": torch.rand(2, 4), "labels": torch.tensor([1, 2]), "scores": torch.rand(2),
                "masks": torch.rand(2, 1, 3, 3)}, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long(),
                                                   "scores": torch.zeros(0), "masks": torch.zeros(0, 1, 3, 3)}]
    assert outputs_to_host(outputs) is outputs  # on the CPU already: passes through
    copies = []
    original = torch.Tensor.cpu

    def counting(self, *args, **kwargs):
        copies.append(self.dtype)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting)
    restored = outputs_to_host(outputs, pack_cpu=True)  # as from a device: packed per dtype, one copy each
    assert len(copies) == 2  # float32 and int64
    for before, after in zip(outputs, restored):
        assert before.keys() == after.keys()
        for key in before:
            assert torch.equal(before[key], after[key]) and before[key].dtype == after[key].dtype


# ------------------------------------------------------------------------------------------------ GPU options


def test_channels_last_auto():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    vit_like = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.Flatten(), nn.Linear(4, 2))
    assert is_conv_net(conv) and not is_conv_net(vit_like)
    assert resolve_channels_last("auto", torch.device("cuda", 0), conv) is True
    assert resolve_channels_last("auto", torch.device("cuda", 0), vit_like) is False
    assert resolve_channels_last("auto", torch.device("cpu"), conv) is False
    assert resolve_channels_last(True, torch.device("cpu"), vit_like) is True
    assert load_config(None, []).train.channels_last == "auto"


@pytest.fixture
def one_rank_group(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize(("overrides", "find_unused", "static"), [
    ([], False, True),
    (["finetune.freeze=backbone"], False, True),  # frozen parameters need no find_unused_parameters
    (["train.find_unused_parameters=true"], True, False),
    (["finetune.freeze=backbone", "finetune.unfreeze_at_epoch=1"], False, False),  # the graph changes
    (["task=instance_segmentation"], False, False),
    (["train.accumulate=2"], False, False),  # static_graph fails with no_sync
])
def test_ddp_options(one_rank_group, overrides, find_unused, static):
    config = load_config(None, overrides)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ddp = wrap_model(model, config, device=torch.device("cpu"), distributed=True, is_main=True)
    assert isinstance(ddp, nn.parallel.DistributedDataParallel)
    assert ddp.find_unused_parameters is find_unused
    assert ddp.gradient_as_bucket_view is True
    assert ddp.static_graph is static


def test_compile_runs_for_classification(tiny_shapes, tmp_path, monkeypatch):
    """The ``train.compile`` code path with a stubbed ``torch.compile`` (compiling on this CPU takes minutes)."""
    compiled = []

    def fake_compile(model, *args, **kwargs):
        compiled.append(type(model).__name__)
        wrapper = nn.Module()
        wrapper._orig_mod = model
        wrapper.forward = model.forward  # type: ignore[method-assign]
        wrapper.train = model.train  # type: ignore[method-assign]
        return wrapper

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = train(load_config(None, [
        "task=classification", "device=cpu", f"data.root={tiny_shapes}", f"project={tmp_path}",
        "model.name=test_resnet", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
        "train.epochs=1", "train.max_steps=2", "train.progress=false", "train.plots=false", "train.compile=true"]))
    assert compiled == ["ImageClassifier"] and result.history[-1]["step"] == 2


# ------------------------------------------------------------------------------------------------ distributed


HEIGHT, WIDTH = 20, 24
BOXES = [(2, 2, 10, 10), (12, 4, 22, 16), (1, 12, 9, 19), (5, 5, 15, 15)]


def _mask(box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = 1
    return mask


class FakeSplit:
    """Four images, one object each (categories 1, 2, 1, 2)."""

    def __init__(self) -> None:
        self.image_ids = [1, 2, 3, 4]

    def coco_ground_truth(self) -> dict[str, Any]:
        from pycocotools import mask as mask_utils

        annotations = []
        for index, box in enumerate(BOXES):
            x1, y1, x2, y2 = box
            rle = mask_utils.encode(np.asfortranarray(_mask(box)))
            annotations.append({"id": index + 1, "image_id": index + 1, "category_id": 1 + index % 2,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((x2 - x1) * (y2 - y1)),
                                "iscrowd": 0, "segmentation": {"size": [HEIGHT, WIDTH],
                                                               "counts": rle["counts"].decode()}})
        return {"images": [{"id": i, "height": HEIGHT, "width": WIDTH} for i in self.image_ids],
                "annotations": annotations, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def fake_output(index: int) -> dict[str, torch.Tensor]:
    x1, y1, x2, y2 = BOXES[index]
    shifted = (x1 + index % 3, y1, x2, y2)  # imperfect boxes, AP strictly between 0 and 1
    masks = torch.from_numpy(_mask(shifted)).float()[None, None] * 0.9
    return {"boxes": torch.tensor([shifted], dtype=torch.float32), "labels": torch.tensor([1 + index % 2]),
            "scores": torch.tensor([0.9 - 0.1 * index]), "masks": masks}


def coco_evaluator():
    from visiontune.evaluation.instance_segmentation import InstanceSegmentationEvaluator

    return InstanceSegmentationEvaluator(FakeSplit(), label_to_category_id={1: 1, 2: 2}, class_names=["a", "b"])


def _two_rank_worker(rank: int, store: str, out_dir: str) -> None:
    from visiontune.evaluation.coco import CocoEvaluator
    from visiontune.utils import comm

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        scored = []
        original = CocoEvaluator._evaluate

        def counting(self, iou_type):
            scored.append(iou_type)
            return original(self, iou_type)

        CocoEvaluator._evaluate = counting  # type: ignore[method-assign]
        evaluator = coco_evaluator()
        for index in range(rank, 4, 2):
            evaluator.update([fake_output(index)], [{"image_id": torch.tensor(index + 1)}])
        evaluator.synchronize()
        received = sorted(evaluator.coco._results)
        metrics = evaluator.compute()
        sums, votes = comm.all_reduce_sum_with_votes(torch.tensor([[1.0, 2.0], [3.0, float(rank)]]),
                                                     [rank == 1, False])
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(
            {"metrics": metrics, "scored": scored, "received": received, "sums": sums, "votes": votes}))
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_coco_eval_on_rank_zero_only_equals_one_process(tmp_path):
    single = coco_evaluator()
    for index in range(4):
        single.update([fake_output(index)], [{"image_id": torch.tensor(index + 1)}])
    single.synchronize()
    expected = single.compute()
    assert 0 < expected["bbox_AP"] < 1
    torch.multiprocessing.start_processes(_two_rank_worker, args=(str(tmp_path / "store"), str(tmp_path)),
                                          nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for result in ranks:
        assert result["metrics"].keys() == expected.keys()
        for key, value in expected.items():
            assert result["metrics"][key] == value or (math.isnan(value) and math.isnan(result["metrics"][key]))
        assert result["sums"] == [[2.0, 4.0], [6.0, 1.0]] and result["votes"] == [True, False]
    assert ranks[0]["scored"] == ["bbox", "segm"] and ranks[1]["scored"] == []  # rank 0 alone runs COCOeval
    assert ranks[0]["received"] == [1, 2, 3, 4] and ranks[1]["received"] == [2, 4]
