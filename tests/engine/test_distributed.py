"""Distributed training and the GPU-only options, on CPU.

The DDP tests launch ``python -m torch.distributed.run --nproc-per-node 2`` (Gloo, one thread per process) on the
18 + 9 image shapes set with timm's ``test_vit`` (LayerNorm only: no BatchNorm batch statistics, so 2 ranks x 4
images and 1 process x 2 micro-batches of 4 compute the same gradients). Options that need CUDA (AMP dtype
selection, loss scaling, cuDNN autotuning, pinned memory, ``torch.compile`` fallback) are tested through the
functions that decide them.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import one_thread, train
from visiontune.api import config_for_checkpoint, evaluate
from visiontune.config import load_config
from visiontune.data.widerface import WiderFaceRecord
from visiontune.engine.build import amp_dtype, build_grad_scaler, configure_torch_backends
from visiontune.engine.checkpoint import load_checkpoint
from visiontune.engine.inference import to_device
from visiontune.engine.loaders import ShardSampler, TrainSampler, build_loader
from visiontune.engine.trainer import Trainer
from visiontune.evaluation.face_detection import FaceDetectionEvaluator
from visiontune.utils import comm

SCRIPT = Path(__file__).parent / "scripts" / "train_with_faults.py"
DDP_STEPS = 6  # 3 epochs x 2 steps: 18 images -> 9 per rank -> 2 batches of 4 (drop_last)


def ddp_overrides(data_root: Path, project: Path, *extra: str) -> list[str]:
    """A 3-epoch ``test_vit`` run at 32 px, batch 4 per process."""
    return ["task=classification", "device=cpu", f"data.root={data_root}", f"project={project}", "name=ddp",
            "model.name=test_vit", "model.kwargs={img_size: 32}", "data.image_size=32", "data.crop_pct=1.0",
            "data.batch_size=4", "data.num_workers=0", "optim.name=sgd", "optim.lr=0.05", "train.epochs=3",
            "train.progress=false", "train.plots=false", "train.eval_before=false", "seed=7", *extra]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(arguments: list[str], *, cwd: Path, max_restarts: int = 0) -> str:
    """Run ``torchrun --nproc-per-node 2 <arguments>`` on CPU; returns its output, failing the test on an error."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "--max-restarts", str(max_restarts), *arguments]
    completed = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout
    return completed.stdout


@pytest.fixture(scope="module")
def ddp_run(tiny_shapes, tmp_path_factory) -> tuple[Path, str]:
    """``torchrun --nproc-per-node 2 -m visiontune train ...``: the run directory and the launcher's output."""
    project = tmp_path_factory.mktemp("ddp")
    output = torchrun(["-m", "visiontune", "train", *ddp_overrides(tiny_shapes, project), "train.sync_bn=true"],
                      cwd=project)
    return project / "classification" / "ddp", output


# ------------------------------------------------------------------------------------------------ samplers


def test_train_sampler_splits_padded_permutation_across_ranks():
    samplers = [TrainSampler(10, seed=3, rank=rank, world_size=3) for rank in range(3)]
    for sampler in samplers:
        sampler.set_epoch(2)
    orders = [sampler.order() for sampler in samplers]
    assert [len(order) for order in orders] == [4, 4, 4]  # ceil(10 / 3), padded like DistributedSampler
    interleaved = [orders[position % 3][position // 3] for position in range(12)]
    assert sorted(interleaved[:10]) == list(range(10)) and interleaved[10:] == interleaved[:2]
    samplers[0].set_epoch(3)
    assert samplers[0].order() != orders[0]  # a new permutation each epoch
    samplers[1].set_epoch(2, start=3)  # mid-epoch resume: skip the 3 samples this rank already used
    assert [index for _, index in samplers[1]] == orders[1][3:] and len(samplers[1]) == 1


def test_shard_sampler_covers_each_sample_once():
    shards = [list(ShardSampler(9, rank=rank, world_size=2)) for rank in range(2)]
    assert shards == [[0, 2, 4, 6, 8], [1, 3, 5, 7]]  # no padding: 9 samples stay 9
    assert list(ShardSampler(1, rank=1, world_size=2)) == []


# ------------------------------------------------------------------------------------------------ DDP (torchrun)


def test_ddp_matches_one_process_with_gradient_accumulation(ddp_run, tiny_shapes, tmp_path):
    run_dir, output = ddp_run
    with one_thread():
        single = train(load_config(None, ddp_overrides(tiny_shapes, tmp_path, "train.accumulate=2")))
    distributed = load_checkpoint(run_dir / "last.pt")
    reference = load_checkpoint(single.run_dir / "last.pt")
    assert (distributed["world_size"], reference["world_size"]) == (2, 1)
    assert distributed["step"] == reference["step"] == DDP_STEPS
    initial = Trainer(load_config(None, ddp_overrides(tiny_shapes, tmp_path / "init")))
    initial.setup()
    moved = 0.0
    for key, tensor in reference["model"].items():
        torch.testing.assert_close(distributed["model"][key], tensor, rtol=0, atol=1e-5, msg=key)
        moved = max(moved, float((tensor - initial.model.state_dict()[key]).abs().max()))
    assert moved > 1e-2  # the comparison is about trained weights
    # the logged train loss is the mean over ranks (DDP) as over micro-batches (accumulation)
    for distributed_row, reference_row in zip(distributed["history"], reference["history"], strict=True):
        assert distributed_row["train_loss"] == pytest.approx(reference_row["train_loss"], abs=1e-5)
        assert distributed_row["val_top1"] == reference_row["val_top1"]
    # rank 0 alone wrote the run directory and logged, once, the effective batch
    assert [path.name for path in run_dir.parent.iterdir()] == ["ddp"]
    assert len(list(csv.DictReader((run_dir / "metrics.csv").open()))) == 3
    assert output.count("global batch 8 = 4 per device x 2 devices x 1 accumulation; lr 0.05") == 1
    assert output.count("device cpu, DDP over 2 processes (gloo)") == 1
    assert output.count("train.sync_bn: SyncBatchNorm runs on CUDA only; on cpu every process keeps its own") == 1


def test_distributed_eval_equals_one_process_with_odd_split(ddp_run, tmp_path):
    run_dir, _ = ddp_run
    checkpoint = run_dir / "last.pt"
    torchrun(["-m", "visiontune", "eval", f"checkpoint={checkpoint}", f"output={tmp_path / 'ranks'}",
              "train.progress=false"], cwd=tmp_path)
    state = load_checkpoint(checkpoint)
    with one_thread():
        single = evaluate(config_for_checkpoint(state, None, [f"output={tmp_path / 'single'}"]),
                          checkpoint=checkpoint)
    distributed = json.loads((tmp_path / "ranks" / "metrics.json").read_text())
    assert distributed.pop("intervals") == single.intervals  # the images gathered in dataset order: same resamples
    assert distributed == single.metrics
    assert distributed["val_top1"] == state["history"][-1]["val_top1"]  # = validation during DDP training
    # 9 validation images on 2 ranks (5 + 4): each counted once, none padded in
    with (tmp_path / "ranks" / "confusion_matrix.csv").open(newline="") as stream:
        rows = list(csv.reader(stream))[1:]
    assert [sum(int(count) for count in row[1:]) for row in rows] == [3, 3, 3]


def test_torchrun_restart_after_sigkill_matches_uninterrupted_run(ddp_run, tiny_shapes, tmp_path):
    reference_dir, _ = ddp_run
    marker = tmp_path / "killed"
    runs = tmp_path / "runs"
    output = torchrun([str(SCRIPT), "--kill-at-step", "3", "--kill-rank", "1", "--marker", str(marker),
                       *ddp_overrides(tiny_shapes, runs, "train.sync_bn=true", "train.save_every_steps=1",
                                      "train.auto_resume=true")], cwd=tmp_path, max_restarts=1)
    assert marker.read_text() == "killed rank 1 before step 3\n"  # the first attempt did die
    run_dir = runs / "classification" / "ddp"
    assert [path.name for path in run_dir.parent.iterdir()] == ["ddp"]  # the restarted ranks chose the same run
    assert f"resumed from {run_dir / 'step_3.pt'} at epoch 1, step 3" in output
    final = load_checkpoint(run_dir / "last.pt")
    reference = load_checkpoint(reference_dir / "last.pt")
    assert final["step"] == reference["step"] == DDP_STEPS
    for key, tensor in reference["model"].items():
        assert torch.equal(final["model"][key], tensor), key
    assert [row["train_loss"] for row in final["history"]] == [row["train_loss"] for row in reference["history"]]


LINEAR_PROBE = ("finetune.freeze=backbone", "finetune.cache_features=true", "data.scale=[1,1]", "data.ratio=[1,1]",
                "data.hflip=0", "data.color_jitter=0", "train.epochs=2", "train.eval_before=true")


@pytest.mark.parametrize("where", ["memory", "file"])
def test_torchrun_linear_probe_on_cached_features_matches_one_process(tiny_shapes, tmp_path, where):
    """In memory each rank computes every second image and all receive the split; as a file rank 0 writes it and
    both read it. Either way the head trains as one process with two micro-batches does, on the same features."""
    extra = (*LINEAR_PROBE, *(["finetune.cache_memory_limit_mb=0"] if where == "file" else []))
    output = torchrun(["-m", "visiontune", "train", *ddp_overrides(tiny_shapes, tmp_path / "ddp", *extra)],
                      cwd=tmp_path)
    if where == "memory":
        assert output.count("cached train features in memory: 18 x 64 (0.0 MB, computed in 2 shards)") == 1
    else:  # built once, by rank 0
        npy = tmp_path / "ddp" / "classification" / "ddp" / "feature_cache" / "train.npy"
        assert output.count(f"cached train features in {npy}: 18 x 64") == 1
    with one_thread():
        single = train(load_config(None, ddp_overrides(tiny_shapes, tmp_path / "one", *extra, "train.accumulate=2")))
    distributed = load_checkpoint(tmp_path / "ddp" / "classification" / "ddp" / "last.pt")
    reference = load_checkpoint(single.run_dir / "last.pt")
    assert distributed["step"] == reference["step"] == 4
    for key, tensor in reference["model"].items():
        torch.testing.assert_close(distributed["model"][key], tensor, rtol=0, atol=1e-5, msg=key)
    assert [row["val_top1"] for row in distributed["history"]] == [row["val_top1"] for row in reference["history"]]


@pytest.mark.parametrize(("attempt", "local_world", "warns"), [("0", "8", False), ("2", "8", True)])
def test_restart_on_several_machines_warns_about_shared_store(monkeypatch, caplog, attempt, local_world, warns):
    # 16 processes on 2 machines: the launchers' restart counts may differ, so no per-attempt prefix is possible
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", attempt)
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    assert comm._restart_attempt_store(datetime.timedelta(seconds=1)) is None
    assert ("torchrun restart 2 on several machines" in caplog.text) == warns
    assert ("TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in caplog.text) == warns


# ------------------------------------------------------------------------------------------------ evaluators


def face_record(image_id: str, boxes: list[list[float]]) -> WiderFaceRecord:
    boxes_array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    corners = boxes_array[:, None, :2] + np.array([[2, 2], [6, 2], [4, 4], [2, 6], [6, 6]], dtype=np.float32)
    return WiderFaceRecord(relative_path=f"{image_id}.jpg", line_number=1, boxes=boxes_array, landmarks=corners,
                           landmarks_valid=np.ones(len(boxes_array), dtype=bool))


def face_output(boxes: list[list[float]], scores: list[float], shift: float) -> dict[str, torch.Tensor]:
    boxes_tensor = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    corners = boxes_tensor[:, None, :2] + torch.tensor([[2, 2], [6, 2], [4, 4], [2, 6], [6, 6]]) + shift
    return {"boxes": boxes_tensor, "scores": torch.tensor(scores), "landmarks": corners}


def test_face_detection_eval_on_two_ranks_equals_one_process(monkeypatch):
    records = [face_record(f"event/{index}", [[0, 0, 10, 10], [20, 20, 30, 30]]) for index in range(5)]
    detections = [  # per image: a hit, a false positive or a miss, with landmark errors growing with the index
        face_output([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.6 + 0.05 * index], shift=0.5 * index)
        for index in range(5)]
    targets = [{"image_id": record.image_id, "scale": 1.0} for record in records]

    single = FaceDetectionEvaluator(records)
    for index in range(5):
        single.update([detections[index]], [targets[index]])
    single.synchronize()
    expected = single.compute()
    assert set(expected) == {"ap", "nme"} and 0 < expected["ap"] < 1 and expected["nme"] > 0

    ranks = [FaceDetectionEvaluator(records) for _ in range(2)]
    for rank, evaluator in enumerate(ranks):
        for index in ShardSampler(5, rank=rank, world_size=2):
            evaluator.update([detections[index]], [targets[index]])
    shards = [evaluator.predictions for evaluator in ranks]
    evaluator_module = sys.modules[FaceDetectionEvaluator.__module__]  # wherever the evaluator is defined
    monkeypatch.setattr(evaluator_module, "all_gather_objects", lambda obj: shards)  # a 2-rank all_gather
    for evaluator in ranks:
        evaluator.synchronize()
        assert evaluator.compute() == expected


# ------------------------------------------------------------------------------------------------ GPU options


@pytest.mark.parametrize(("mode", "device", "bf16_supported", "expected"), [
    ("auto", "cpu", True, None),
    ("auto", "cuda", True, torch.bfloat16),
    ("auto", "cuda", False, torch.float16),  # e.g. a V100 or T4
    ("off", "cuda", True, None),
    ("fp16", "cuda", True, torch.float16),
    ("bf16", "cpu", False, torch.bfloat16),
])
def test_amp_dtype_selection(monkeypatch, mode, device, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    config = load_config(None, [])
    config.train.amp = mode  # (the override train.amp=off would read as YAML's boolean false)
    assert amp_dtype(config, torch.device(device)) == expected


def test_grad_scaler_only_for_float16():
    cpu = torch.device("cpu")
    assert build_grad_scaler(cpu, torch.float16).is_enabled()
    assert not build_grad_scaler(cpu, torch.bfloat16).is_enabled()
    assert not build_grad_scaler(cpu, None).is_enabled()


def short_run(tiny_shapes: Path, tmp_path: Path, *extra: str) -> Trainer:
    """Two steps of ``test_resnet`` without validation."""
    trainer = Trainer(load_config(None, [
        "task=classification", "device=cpu", f"data.root={tiny_shapes}", f"project={tmp_path}",
        "model.name=test_resnet", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
        "data.val_split=null", "train.epochs=1",
        "train.max_steps=2", "train.progress=false", "train.plots=false", *extra]))
    with one_thread():
        trainer.fit()
    return trainer


def test_fp16_autocast_trains_with_loss_scaling_on_cpu(tiny_shapes, tmp_path):
    trainer = short_run(tiny_shapes, tmp_path, "train.amp=fp16", "train.clip_grad=1.0")
    assert trainer.autocast_dtype == torch.float16 and trainer.scaler.is_enabled()
    stored = load_checkpoint(trainer.run_dir / "last.pt")
    assert stored["step"] == 2 and stored["scaler"]["scale"] > 0  # the scaler state is checkpointed
    assert all(torch.isfinite(tensor).all() for tensor in stored["model"].values())


def test_channels_last_model_and_batches(tiny_shapes, tmp_path, monkeypatch):
    seen_formats = []

    def record_format(module, args):
        seen_formats.append(args[0].is_contiguous(memory_format=torch.channels_last))

    original_setup = Trainer.setup

    def setup_and_watch(self):
        original_setup(self)
        self.model.net.register_forward_pre_hook(record_format)

    monkeypatch.setattr(Trainer, "setup", setup_and_watch)
    trainer = short_run(tiny_shapes, tmp_path, "train.channels_last=true")
    convolution = trainer.model.net.conv1[0]
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last)
    assert seen_formats == [True, True]


def test_compile_failure_falls_back_to_eager(tiny_shapes, tmp_path, monkeypatch, caplog):
    def failing_compile(model, *args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", failing_compile)
    trainer = short_run(tiny_shapes, tmp_path, "train.compile=true")
    assert "torch.compile failed (no C++ compiler found); continuing without it" in caplog.text
    assert trainer.train_step.train_model is trainer.model
    assert trainer.state.step == 2


def test_configure_torch_backends(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure_torch_backends(torch.device("cpu"), deterministic=False)
    assert torch.backends.cudnn.benchmark is False  # cuDNN autotuning is a CUDA matter
    configure_torch_backends(torch.device("cuda", 0), deterministic=False)
    assert torch.backends.cudnn.benchmark is True
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        configure_torch_backends(torch.device("cuda", 0), deterministic=True)
        assert torch.backends.cudnn.benchmark is False and torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(deterministic_before)


def test_loader_pins_memory_only_with_cuda(monkeypatch):
    dataset = torch.utils.data.TensorDataset(torch.zeros(4, 3))
    options = {"batch_size": 2, "sampler": ShardSampler(4), "collate_fn": None, "num_workers": 0,
               "persistent_workers": True}
    assert build_loader(dataset, pin_memory=True, **options).pin_memory is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert build_loader(dataset, pin_memory=True, **options).pin_memory is True
    assert build_loader(dataset, pin_memory=False, **options).pin_memory is False


def test_to_device_moves_nested_batches():
    batch = {"images": [torch.zeros(2), torch.ones(3)], "targets": ({"boxes": torch.zeros(1, 4)}, "id-7"), "n": 2}
    moved = to_device(batch, torch.device("meta"), non_blocking=True)
    assert moved["images"][0].device.type == moved["images"][1].device.type == "meta"
    assert moved["targets"][0]["boxes"].device.type == "meta" and moved["targets"][0]["boxes"].shape == (1, 4)
    assert isinstance(moved["targets"], tuple) and moved["targets"][1] == "id-7" and moved["n"] == 2


def test_sync_batchnorm_stays_off_on_cpu_and_converts_on_cuda(tiny_shapes, tmp_path, monkeypatch, caplog):
    trainer = Trainer(load_config(None, [
        "task=classification", "device=cpu", f"data.root={tiny_shapes}", f"project={tmp_path}",
        "model.name=test_resnet", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
        "train.sync_bn=true",
        "train.progress=false"]))
    trainer.setup()
    converted: list[nn.Module] = []
    monkeypatch.setattr(nn.SyncBatchNorm, "convert_sync_batchnorm", lambda model: converted.append(model) or model)
    monkeypatch.setattr(nn.parallel, "DistributedDataParallel", lambda model, **kwargs: ("ddp", model, kwargs))
    monkeypatch.setattr(type(trainer.dist), "enabled", property(lambda self: True))  # as under torchrun
    assert trainer.rewrap_model()[:2] == ("ddp", trainer.model) and converted == []
    assert "SyncBatchNorm runs on CUDA only; on cpu" in caplog.text
    trainer.device = torch.device("cuda", 1)
    _, _model, options = trainer.rewrap_model()
    assert converted == [trainer.model] and options["device_ids"] == [1]
