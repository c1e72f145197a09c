"""``visiontune tune``: Optuna trials as training runs: files, pruning, failures, resume, feature cache, specs."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import one_thread
from visiontune.cli import main
from visiontune.config import ConfigError, load_config
from visiontune.engine.hooks import HookBase
from visiontune.engine.stop import NonFiniteLossError
from visiontune.tune import SPEC_SYNTAX, parse_space, parse_spec, tune
from visiontune.utils.plots import format_metric

SCRIPT = Path(__file__).parent / "scripts" / "tune_killed_in_trial.py"
SPACE = "tune.space={optim.lr: 'loguniform(1e-3, 0.3)', optim.weight_decay: 'loguniform(1e-6, 1e-2)'}"


def overrides(data: Path, project: Path, *extra: str) -> list[str]:
    """One-epoch trials of ``test_vit`` at 32 px (3 steps of 6 images), no baseline, report or final seeds."""
    return ["task=classification", "device=cpu", f"data.root={data}", f"project={project}", "name=search",
            "model.name=test_vit", "model.kwargs={img_size: 32}", "data.image_size=32", "data.crop_pct=1.0",
            "data.batch_size=6", "data.num_workers=0", "train.epochs=1", "train.progress=false", "train.plots=false",
            "train.report=false", "train.eval_before=false", "tune.final_seeds=0", "tune.sampler=random", SPACE,
            *extra]


def read_trials(folder: Path) -> list[dict[str, str]]:
    with (folder / "trials.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


def test_search_writes_its_files_and_best_yaml_trains(tiny_shapes, tmp_path, capsys):
    with one_thread():
        assert main(["tune", *overrides(tiny_shapes, tmp_path, "tune.trials=3", "tune.final_seeds=2")]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "classification" / "search"
    for name in ("study.db", "config.yaml", "trials.csv", "best.yaml", "final.json", "report.html"):
        assert (folder / name).is_file(), name
    rows = read_trials(folder)
    assert [row["number"] for row in rows] == ["0", "1", "2"]
    assert {row["state"] for row in rows} == {"complete"}
    assert list(rows[0])[:5] == ["number", "state", "val_top1", "epochs", "seconds"]
    assert all(row["epochs"] == "1" and float(row["seconds"]) > 0 and float(row["optim.lr"]) > 0 for row in rows)
    assert sorted(path.name for path in (folder / "trials").iterdir()) == ["trial-0000", "trial-0001", "trial-0002"]
    assert all((folder / "trials" / f"trial-000{n}" / "best.pt").is_file() for n in range(3))
    best = max(rows, key=lambda row: float(row["val_top1"]))  # the first of equal values, as Optuna
    final = json.loads((folder / "final.json").read_text())
    assert final["trial"] == int(best["number"]) and final["seeds"] == [43, 44] and len(final["values"]) == 2
    assert sorted((folder / "final").iterdir()) == [folder / "final" / "seed-43", folder / "final" / "seed-44"]
    assert f"best trial       {best['number']}" in out
    assert f"final seeds (2)  {format_metric(final['mean'])} ± {final['std']:.2g}" in out
    assert "trials           3 completed, 0 pruned, 0 failed" in out and f"tune folder      {folder}" in out
    page = (folder / "report.html").read_text()
    assert "<script" not in page and page.count("data:image/png;base64,") >= 4  # history, importance, 2 params
    assert "Parameter importance" in page and "Metric against each parameter" in page

    best_yaml = load_config(folder / "best.yaml")
    assert best_yaml.name == "search-best" and best_yaml.optim.lr == pytest.approx(float(best["optim.lr"]))
    with one_thread():
        assert main(["train", "-c", str(folder / "best.yaml")]) == 0
    assert (tmp_path / "classification" / "search-best" / "best.pt").is_file()


class ScriptedRuns(HookBase):
    """The first run reports top-1 0.9 after each epoch, later ones 0.1 (what the pruner sees); run 2 fails."""

    def __init__(self) -> None:
        self.runs = 0

    def before_train(self, trainer) -> None:
        self.runs += 1

    def before_step(self, trainer) -> None:
        if self.runs == 2:
            raise NonFiniteLossError("non-finite loss at epoch 0, step 0: scripted")

    def after_epoch(self, trainer, row) -> None:
        if trainer.storage.eval_metrics is not None:
            trainer.storage.eval_metrics["val_top1"] = 0.9 if self.runs == 1 else 0.1


def test_pruned_and_failed_trials_are_recorded_and_the_search_goes_on(tiny_shapes, tmp_path, caplog):
    config = load_config(None, overrides(tiny_shapes, tmp_path, "tune.trials=5", "train.epochs=2",
                                         "tune.pruner=median", "tune.startup_trials=0", "tune.sampler=grid",
                                         "tune.space={optim.lr: 'choice([0.01, 0.02, 0.03, 0.04])'}"))
    caplog.set_level(logging.INFO)
    with one_thread():
        result = tune(config, hooks=[ScriptedRuns()])
    rows = read_trials(result.folder)
    assert [row["state"] for row in rows] == ["complete", "failed", "pruned", "pruned"]  # the grid's 4, not 5
    assert [row["optim.lr"] for row in rows] == ["0.01", "0.02", "0.03", "0.04"]  # in order, each once
    assert rows[1]["reason"] == "NonFiniteLossError: non-finite loss at epoch 0, step 0: scripted"
    assert [row["epochs"] for row in rows] == ["2", "0", "1", "1"]  # pruned after the first epoch of two
    assert float(rows[2]["val_top1"]) == pytest.approx(0.1)  # a pruned trial's value: its last report
    assert result.counts == {"complete": 1, "pruned": 2, "failed": 1, "interrupted": 0}
    assert result.best_number == 0
    assert "trial-0001 failed: NonFiniteLossError: non-finite loss at epoch 0, step 0: scripted" in caplog.text
    assert "pruned: val_top1 0.1000 after epoch 1 (tune.pruner)" in caplog.text


def test_resume_after_sigkill_continues_to_the_number_of_trials(tiny_shapes, tmp_path, caplog):
    arguments = overrides(tiny_shapes, tmp_path, "tune.trials=2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    killed = subprocess.run([sys.executable, str(SCRIPT), "--kill-trial", "1", *arguments], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = tmp_path / "classification" / "search"
    assert [row["state"] for row in read_trials(folder)] == ["complete"]  # trial 1 died running

    caplog.set_level(logging.INFO)
    with one_thread():
        result = tune(load_config(None, arguments))
    assert result.folder == folder and result.resumed  # the same folder, no search-2
    assert sorted(path.name for path in folder.parent.iterdir()) == ["search"]
    rows = read_trials(folder)
    assert [row["number"] for row in rows] == ["0", "1", "2"]
    assert [row["state"] for row in rows] == ["complete", "interrupted", "complete"]
    assert rows[1]["reason"] == "the process ended during this trial (crash or kill)"
    assert result.counts == {"complete": 2, "pruned": 0, "failed": 0, "interrupted": 1}
    assert "trial 1 was left running by an earlier invocation: marked failed, not counted" in caplog.text
    assert len({row["optim.lr"] for row in rows}) == 3  # the resumed sampler does not replay the first values

    with one_thread():
        again = tune(load_config(None, arguments))  # finished: nothing more to run, nothing duplicated
    assert again.folder == folder and len(read_trials(folder)) == 3


def test_frozen_backbone_trials_read_one_feature_cache(tiny_shapes, tmp_path, caplog):
    linear_probe = ("finetune.freeze=backbone", "finetune.cache_features=true", "data.scale=[1,1]",
                    "data.ratio=[1,1]", "data.hflip=0", "data.color_jitter=0")
    config = load_config(None, overrides(tiny_shapes, tmp_path, *linear_probe, "tune.trials=3"))
    caplog.set_level(logging.INFO)
    with one_thread():
        result = tune(config)
    shared = result.folder / "feature_cache"
    assert caplog.text.count(f"cached train features in {shared / 'train.npy'}") == 0  # written through the link
    built = [record.getMessage() for record in caplog.records if record.getMessage().startswith("cached ")]
    reused = [record.getMessage() for record in caplog.records if "reusing it" in record.getMessage()]
    assert len(built) == 2 and len(reused) == 4, built  # train + val once, then read by trials 1 and 2
    assert sorted(path.name for path in shared.iterdir()) == ["train.json", "train.npy", "val.json", "val.npy"]
    assert (result.folder / "trials" / "trial-0001" / "feature_cache").resolve() == shared.resolve()


# ------------------------------------------------------------------------------------------------ the space


@pytest.mark.parametrize(("spec", "kind", "arguments"), [
    ("loguniform(1e-4, 0.3)", "loguniform", (1e-4, 0.3)),
    ("uniform(0, 0.2)", "uniform", (0, 0.2)),
    ("int(0, 3)", "int", (0, 3)),
    ("choice([backbone, none])", "choice", ("backbone", "none")),
    ("choice([0.5, 0.75, null])", "choice", (0.5, 0.75, None)),
    ("choice(['first_n: 3', backbone])", "choice", ("first_n: 3", "backbone")),
])
def test_specs_parse(spec, kind, arguments):
    parsed = parse_spec("finetune.layer_decay", spec)
    assert (parsed.kind, parsed.arguments) == (kind, arguments)


@pytest.mark.parametrize(("spec", "why"), [
    ("loguniform(0, 1)", "loguniform needs low > 0"),
    ("uniform(0.3, 0.1)", "low must be below high"),
    ("int(1.5, 3)", "int takes two whole numbers"),
    ("gauss(0, 1)", "not a distribution"),
    ("uniform(1)", "uniform takes two numbers (low, high)"),
    ("uniform(0, __import__('os').getpid())", "uniform takes two numbers (low, high)"),  # read, never evaluated
    ("choice(0.1, 0.2)", "choice takes one non-empty list"),
    ("choice([[1], [2]])", "choices must be numbers, strings, true/false or null"),
])
def test_malformed_spec_names_the_key_and_the_syntax(spec, why):
    with pytest.raises(ConfigError) as error:
        parse_spec("optim.lr", spec)
    assert str(error.value) == f"tune.space.optim.lr: {spec!r}: {why}; expected {SPEC_SYNTAX}"


def test_space_keys_are_checked_like_overrides():
    with pytest.raises(ConfigError, match=r"tune.space: unknown config key 'optim.lrr' \(did you mean 'optim.lr'"):
        parse_space({"optim.lrr": "loguniform(1e-4, 0.3)"})
    with pytest.raises(ConfigError, match="'optim' is a section"):
        parse_space({"optim": "uniform(0, 1)"})
    with pytest.raises(ConfigError, match="'tune.trials' cannot be searched"):
        parse_space({"tune.trials": "int(1, 3)"})
    with pytest.raises(ConfigError, match="tune.space is empty"):
        parse_space({})


@pytest.mark.parametrize(("extra", "message"), [
    ("tune.space={optim.lrr: 'loguniform(1e-4, 0.3)'}",
     "tune.space: unknown config key 'optim.lrr' (did you mean 'optim.lr' or"),
    ("tune.space={optim.lr: 'loguniform(1e-4 0.3)'}",
     "tune.space.optim.lr: 'loguniform(1e-4 0.3)': loguniform takes two numbers (low, high); expected "),
    ("tune.space={data.label_smoothing: 'uniform(0, 1)'}",
     "tune.space.data.label_smoothing: 'uniform(0, 1)' gives 1.0, which the config refuses: data.label_smoothing: "
     "expected a number in [0, 1), got 1.0\n"),
    ("tune.space={train.epochs: 'uniform(1, 3)'}", "train.epochs: expected int, got 1.0"),
    ("tune.space={optim.lr: 'uniform(0.1, 0.3)'} tune.sampler=grid",
     "tune.sampler=grid: tune.space.optim.lr is 'uniform(0.1, 0.3)', a continuous range"),
    ("tune.space={optim.lr: 'uniform(0.1, 0.3)'} data.val_split=", "data.val_split is not set"),
])
def test_bad_search_is_one_line_before_anything_is_written(extra, message, tiny_shapes, tmp_path, capsys):
    arguments = [item for item in overrides(tiny_shapes, tmp_path) if item != SPACE]
    first, _, rest = extra.partition("} ")
    assert main(["tune", *arguments, f"{first}}}" if rest else extra, *rest.split()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("visiontune tune: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "classification").exists()
