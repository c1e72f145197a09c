"""Tests for visiontune.evaluation.classification.ClassificationEvaluator on hand-computed examples."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from visiontune.evaluation.classification import ClassificationEvaluator

# Six samples, three classes. Predictions (argmax): 0, 1, 1, 0, 2, 2.
LOGITS = torch.tensor(
    [
        [3.0, 1.0, 0.0],  # label 0, predicted 0, top-2 {0, 1} hit
        [1.0, 3.0, 0.0],  # label 0, predicted 1, top-2 {1, 0} hit
        [0.0, 2.0, 1.0],  # label 1, predicted 1, top-2 hit
        [2.0, 0.0, 1.0],  # label 1, predicted 0, top-2 {0, 2} miss
        [0.0, 1.0, 3.0],  # label 2, predicted 2, top-2 hit
        [0.0, 1.0, 2.0],  # label 0, predicted 2, top-2 {2, 1} miss
    ]
)
LABELS = torch.tensor([0, 0, 1, 1, 2, 0])
# rows = true class, columns = predicted class
CONFUSION = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=np.int64)
# precision = TP / column sum = 1/2, 1/2, 1/2; recall = TP / row sum = 1/3, 1/2, 1/1
# F1 = 2PR / (P + R) = 2/5, 1/2, 2/3
EXPECTED = {
    "top1": 3 / 6,
    "top2": 4 / 6,
    "macro_precision": 0.5,
    "macro_recall": (1 / 3 + 1 / 2 + 1) / 3,
    "macro_f1": (2 / 5 + 1 / 2 + 2 / 3) / 3,
}


def test_hand_computed_metrics() -> None:
    evaluator = ClassificationEvaluator(3, ["ant", "bee", "cat"], topk=(1, 2))
    evaluator.update(LOGITS[:4], LABELS[:4])  # two batches give the same result as one
    evaluator.update(LOGITS[4:], LABELS[4:])
    assert evaluator.num_samples == 6
    metrics = evaluator.compute()
    assert metrics.keys() == EXPECTED.keys()
    for name, value in EXPECTED.items():
        assert metrics[name] == pytest.approx(value), name
    np.testing.assert_array_equal(evaluator.confusion_matrix(), CONFUSION)
    assert evaluator.confusion_matrix().dtype == np.int64
    assert evaluator.per_class_accuracy() == pytest.approx({"ant": 1 / 3, "bee": 0.5, "cat": 1.0})


def test_list_of_dict_outputs_match_tensor_outputs() -> None:
    evaluator = ClassificationEvaluator(3, topk=(1, 2))
    evaluator.update([{"logits": row} for row in LOGITS], LABELS.tolist())
    assert evaluator.compute() == pytest.approx(EXPECTED)
    assert evaluator.class_names == ["0", "1", "2"]


def test_top5_needs_more_than_five_classes() -> None:
    assert ClassificationEvaluator(3).topk == (1,)
    assert ClassificationEvaluator(5).topk == (1,)  # top-5 of 5 classes is always 1: not reported
    assert ClassificationEvaluator(6).topk == (1, 5)
    small = ClassificationEvaluator(4)
    small.update(torch.eye(4), torch.arange(4))
    assert set(small.compute()) == {"top1", "macro_precision", "macro_recall", "macro_f1"}

    evaluator = ClassificationEvaluator(6)
    logits = torch.arange(6.0).repeat(2, 1)  # top-5 = classes 5, 4, 3, 2, 1
    evaluator.update(logits, torch.tensor([0, 1]))
    metrics = evaluator.compute()
    assert metrics["top1"] == 0.0
    assert metrics["top5"] == 0.5


def test_zero_support_and_zero_predictions_follow_zero_division_zero() -> None:
    # Class 2 has samples but is never predicted; class 3 is predicted but has no samples; class 4 never occurs.
    evaluator = ClassificationEvaluator(5, ["a", "b", "c", "d", "e"])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 3, 3]), 5).float()
    evaluator.update(logits, torch.tensor([0, 1, 2, 2]))
    metrics = evaluator.compute()
    # averaged over the classes present in labels or predictions (a, b, c, d): P = R = F1 = (1 + 1 + 0 + 0) / 4
    assert metrics["macro_precision"] == pytest.approx(0.5)
    assert metrics["macro_recall"] == pytest.approx(0.5)
    assert metrics["macro_f1"] == pytest.approx(0.5)
    assert metrics["top1"] == pytest.approx(0.5)
    assert "top5" not in metrics  # 5 classes: top-5 would always be 1
    assert evaluator.per_class_accuracy() == {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0, "e": 0.0}


def test_reset_and_empty_compute() -> None:
    evaluator = ClassificationEvaluator(3)
    with pytest.raises(ValueError, match=r"compute\(\) called before any samples"):
        evaluator.compute()
    evaluator.update(LOGITS, LABELS)
    evaluator.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))  # empty batch (all images skipped)
    assert evaluator.num_samples == 6
    evaluator.reset()
    assert evaluator.num_samples == 0
    assert not evaluator.confusion_matrix().any()


def test_bad_inputs_are_reported() -> None:
    evaluator = ClassificationEvaluator(3)
    with pytest.raises(ValueError, match=r"logits must have shape \[B, 3\], got \(2, 4\)"):
        evaluator.update(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"labels must have shape \[2\] to match logits \(2, 3\), got \(3,\)"):
        evaluator.update(torch.zeros(2, 3), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"label 3 is outside \[0, 3\) \(1 such labels in the batch\)"):
        evaluator.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels must be integer class indices, got dtype torch.float32"):
        evaluator.update(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="predictions of image #0 of the evaluated split have a NaN or infinite value: "
                                         "logits of class 1 of 3 is nan"):
        evaluator.update(torch.tensor([[0.0, float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"outputs\[1\] must be a dict with key 'logits', got dict with keys \['s'\]"):
        evaluator.update([{"logits": torch.zeros(3)}, {"s": torch.zeros(3)}], torch.tensor([0, 1]))
    assert evaluator.num_samples == 0  # nothing half-added
    with pytest.raises(ValueError, match="class_names has 2 names for num_classes=3"):
        ClassificationEvaluator(3, ["a", "b"])
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        ClassificationEvaluator(0)
    with pytest.raises(ValueError, match=r"topk values must be >= 1, got \(0, 1\)"):
        ClassificationEvaluator(3, topk=(0, 1))


def test_synchronize_is_a_no_op_without_process_group() -> None:
    assert not dist.is_initialized()
    evaluator = ClassificationEvaluator(3, topk=(1, 2))
    evaluator.update(LOGITS, LABELS)
    evaluator.synchronize()
    np.testing.assert_array_equal(evaluator.confusion_matrix(), CONFUSION)
    assert evaluator.compute() == pytest.approx(EXPECTED)
    evaluator.update(LOGITS, LABELS)  # still usable: nothing was synchronised
    assert evaluator.num_samples == 12


def _synchronize_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        evaluator = ClassificationEvaluator(3, topk=(1, 2))
        half = slice(0, 4) if rank == 0 else slice(4, 6)  # uneven shards
        evaluator.update(LOGITS[half], LABELS[half])
        evaluator.synchronize()
        evaluator.synchronize()  # idempotent until reset()
        try:
            evaluator.update(LOGITS, LABELS)
            update_error = ""
        except RuntimeError as error:
            update_error = str(error)
        torch.save(
            {"confusion": torch.from_numpy(evaluator.confusion_matrix()), "metrics": evaluator.compute(),
             "update_error": update_error},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_synchronize_sums_counts_over_processes(tmp_path: Path) -> None:
    torch_mp.spawn(_synchronize_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        np.testing.assert_array_equal(result["confusion"].numpy(), CONFUSION)
        assert result["metrics"] == pytest.approx(EXPECTED)
        assert "update() after synchronize()" in result["update_error"]


def test_save_artifacts(tmp_path: Path) -> None:
    evaluator = ClassificationEvaluator(3, ["ant", "bee", "cat"], topk=(1, 2))
    evaluator.update(LOGITS, LABELS)
    paths = evaluator.save_artifacts(tmp_path / "eval")
    assert [path.name for path in paths] == ["confusion_matrix.csv", "confusion_matrix.png", "per_class.csv"]
    assert all(path.is_file() and path.stat().st_size > 0 for path in paths)
    assert paths[1].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    with paths[0].open(newline="") as handle:
        assert list(csv.reader(handle)) == [
            ["true\\predicted", "ant", "bee", "cat"],
            ["ant", "1", "1", "1"],
            ["bee", "1", "1", "0"],
            ["cat", "0", "0", "1"],
        ]
    with paths[2].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class"] for row in rows] == ["ant", "bee", "cat"]
    assert [row["support"] for row in rows] == ["3", "2", "1"]
    assert [row["accuracy"] for row in rows] == ["0.3333", "0.5000", "1.0000"]
    assert [row["precision"] for row in rows] == ["0.5000", "0.5000", "0.5000"]
    assert [row["recall"] for row in rows] == ["0.3333", "0.5000", "1.0000"]
    assert [row["f1"] for row in rows] == ["0.4000", "0.5000", "0.6667"]


SAMPLES = [(f"images/{index}.png", int(label)) for index, label in enumerate(LABELS)]


def read_predictions(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_predictions_match(rows: list[dict[str, str]], names: list[str]) -> None:
    """One row per sample in dataset order; the (true, predicted) pairs count up to the confusion matrix."""
    assert [row["path"] for row in rows] == [path for path, _ in SAMPLES]
    assert [row["true"] for row in rows] == [names[label] for _, label in SAMPLES]
    assert [row["predicted"] for row in rows] == [names[index] for index in LOGITS.argmax(dim=1).tolist()]
    counts = np.zeros((3, 3), dtype=np.int64)
    for row in rows:
        counts[names.index(row["true"]), names.index(row["predicted"])] += 1
    np.testing.assert_array_equal(counts, CONFUSION)
    expected_scores = LOGITS.softmax(dim=1).max(dim=1).values.tolist()
    assert [float(row["score"]) for row in rows] == pytest.approx(expected_scores, abs=1e-4)


def test_save_artifacts_writes_predictions_in_dataset_order(tmp_path: Path) -> None:
    names = ["ant", "bee", "cat"]
    evaluator = ClassificationEvaluator(3, names, topk=(1, 2), samples=SAMPLES)
    evaluator.update(LOGITS[:4], LABELS[:4])
    evaluator.update([{"logits": row} for row in LOGITS[4:]], LABELS[4:])
    paths = evaluator.save_artifacts(tmp_path / "eval")
    assert [path.name for path in paths] == ["confusion_matrix.csv", "confusion_matrix.png", "per_class.csv",
                                             "predictions.csv"]
    assert_predictions_match(read_predictions(paths[3]), names)


def test_predictions_are_not_written_when_samples_do_not_match(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    skipped = ClassificationEvaluator(3, topk=(1,), samples=SAMPLES)
    skipped.update(LOGITS[:5], LABELS[:5])  # a corrupt image skipped: no way to tell which
    assert [path.name for path in skipped.save_artifacts(tmp_path / "a")][-1] == "per_class.csv"
    assert "5 samples were evaluated but the split has 6" in caplog.text
    shuffled = ClassificationEvaluator(3, topk=(1,), samples=SAMPLES)
    shuffled.update(LOGITS.flip(0), LABELS.flip(0))
    shuffled.save_artifacts(tmp_path / "b")
    assert not (tmp_path / "b" / "predictions.csv").exists() and "not in dataset order" in caplog.text
    assert not (tmp_path / "a" / "predictions.csv").exists()


def _strided_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        evaluator = ClassificationEvaluator(3, ["ant", "bee", "cat"], topk=(1, 2), samples=SAMPLES)
        shard = list(range(rank, len(LABELS), world_size))  # the engine's ShardSampler: 0, 2, 4 and 1, 3, 5
        evaluator.update(LOGITS[shard[:2]], LABELS[shard[:2]])
        evaluator.update(LOGITS[shard[2:]], LABELS[shard[2:]])
        evaluator.synchronize()
        if rank == 0:
            evaluator.save_artifacts(Path(out_dir) / "eval")
    finally:
        dist.destroy_process_group()


def test_synchronize_puts_strided_shards_back_in_dataset_order(tmp_path: Path) -> None:
    torch_mp.spawn(_strided_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    assert_predictions_match(read_predictions(tmp_path / "eval" / "predictions.csv"), ["ant", "bee", "cat"])
