"""The benchmark scripts still run: ``benchmarks/gpu_throughput.py --device cpu --tiny`` for every task (seconds
each), and the GPU session script parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(?P<task>\w+): trainer (?P<trainer>[\d.]+) img/s, bare (?P<bare>[\d.]+) img/s, ratio "
                  r"(?P<ratio>[\d.]+) \((?P<model>\S+) @(?P<size>[\dx]+), batch (?P<batch>\d+), fp32, cpu\)$", re.M)


def test_gpu_throughput_tiny_on_cpu(tmp_path):
    results = tmp_path / "results.jsonl"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--task", "all", "--device", "cpu", "--tiny",
         "--json", str(results)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = {match["task"]: match for match in LINE.finditer(done.stdout)}
    assert list(lines) == ["classification", "face_detection", "instance_segmentation"], done.stdout
    assert lines["classification"]["model"] == "resnet10t" and lines["classification"]["size"] == "48"
    assert lines["instance_segmentation"]["size"] == "128x96"
    for match in lines.values():
        assert float(match["trainer"]) > 0 and float(match["bare"]) > 0
        assert float(match["ratio"]) == pytest.approx(float(match["trainer"]) / float(match["bare"]), rel=0.05,
                                                      abs=2e-3)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [record["task"] for record in records] == list(lines)
    assert all(len(record["trainer_epochs"]) == len(record["bare_epochs"]) == 2 for record in records)


def test_gpu_throughput_refuses_cuda_without_a_device():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--task", "classification"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no CUDA device" in done.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_session_script_parses():
    done = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_session.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
