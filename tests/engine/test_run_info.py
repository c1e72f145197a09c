"""``<run>/run_info.json``: written by every training run, and what the report's header reads from it."""

from __future__ import annotations

import json

import timm
import torch

import visiontune
from visiontune.report import write_run_report


def header_of(run_dir) -> str:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    return html.split('id="curves"')[0]


def test_random_initialisation_is_recorded(tiny_config):
    result = visiontune.train(tiny_config("train.epochs=1", "train.eval_before=false"))
    info = json.loads((result.run_dir / "run_info.json").read_text())
    assert info["device"] == "cpu" and info["world_size"] == 1 and info["amp"] == "off"
    assert info["versions"]["torch"] == torch.__version__ and info["weights"] == {}
    header = header_of(result.run_dir)
    assert "random initialisation (no weights loaded)" in header and "fp32" in header


def test_load_report_of_the_initial_weights_is_in_the_header(tiny_config, tmp_path):
    # the same architecture with another number of classes: everything loads but the classifier
    other = timm.create_model("test_resnet", num_classes=7)
    weights = tmp_path / "seven_classes.pt"
    torch.save(other.state_dict(), weights)
    result = visiontune.train(tiny_config("train.epochs=1", "train.eval_before=false", f"model.checkpoint={weights}"))
    info = json.loads((result.run_dir / "run_info.json").read_text())
    report = info["weights"]["model"]
    assert report["source"] == str(weights) and report["loaded"] > 10
    assert report["reinitialized"] and all("fc" in name or "head" in name for name in report["reinitialized"])
    header = header_of(result.run_dir)
    assert f"model: {weights}: {report['loaded']} tensors loaded, {len(report['reinitialized'])} re-initialised" \
        in header
    # a resumed run rewrites run_info.json and keeps the load report of the weights it started from
    resumed = visiontune.train(tiny_config("train.epochs=2", f"resume={result.run_dir / 'last.pt'}"))
    again = json.loads((resumed.run_dir / "run_info.json").read_text())
    assert resumed.run_dir == result.run_dir and again["weights"] == info["weights"]
