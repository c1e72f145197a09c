"""The honest readout of a search: the best trial's values trained again with other seeds (``final.json``).

The best trial's own metric is the maximum of many noisy runs, so it overstates what its values give; the runs of
``tune.final_seeds`` other seeds (``seed + 1``, ``seed + 2``, ...), in ``<tune>/final/seed-S``, give the mean and
spread to expect. They run once: a later invocation of the same study reuses a ``final.json`` of the same best trial
and seeds.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visiontune.tune.space import apply_params
from visiontune.tune.trials import run_training
from visiontune.tune.types import Search, TuneResult
from visiontune.utils import comm
from visiontune.utils.files import atomic_write_json
from visiontune.utils.plots import format_metric

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

__all__ = ["FINAL_FILE", "run_final_seeds"]

FINAL_FILE = "final.json"


def _previous(path: Path, number: int, seeds: list[int]) -> dict[str, Any] | None:
    """The ``final.json`` of an earlier invocation for the same best trial and seeds, else ``None``."""
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(previous, dict) and previous.get("trial") == number and previous.get("seeds") == seeds:
        return previous
    return None


def spread(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value; ``None``, ``None`` for none)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_final_seeds(study: optuna.Study | None, search: Search, result: TuneResult) -> dict[str, Any] | None:
    """Every rank: train the best trial's values with ``tune.final_seeds`` other seeds; rank 0 writes ``final.json``.

    Returns the content of ``final.json``: ``trial``, ``params``, ``metric``, ``seeds``, ``values`` (``null`` for a
    run that failed), ``failures``, ``mean``, ``std`` and ``search_best`` (the best trial's own value); ``None``
    when ``tune.final_seeds=0`` or no trial completed.
    """
    config = search.config
    count = config.tune.final_seeds
    best = comm.broadcast_object((result.best_number, result.best_params) if study is not None else None)
    if count == 0 or best is None or best[0] is None:
        return None
    number, params = best
    seeds = [config.seed + offset for offset in range(1, count + 1)]
    path = search.folder / FINAL_FILE
    previous = comm.main_process_result(lambda: _previous(path, number, seeds))
    if previous is not None:
        logger.info("%s already holds the runs of trial %d with seeds %s", path, number, seeds)
        return previous
    values: list[float | None] = []
    failures: dict[str, str] = {}
    for seed in seeds:
        run = apply_params(search.train_config, {**params, "seed": seed})
        object.__setattr__(run, "preset_file", config.preset_file)
        tracker = [search.mlflow.final_tracker(seed)] if search.mlflow is not None else []
        outcome = run_training(run, [*search.hooks, *tracker], tune_dir=search.folder, group="final",
                               name=f"seed-{seed}")
        value = outcome.result.best_metric if outcome.result is not None else None
        if outcome.reason is not None or value is None or not math.isfinite(value):
            failures[str(seed)] = outcome.reason or f"no finite {search.metric_key}"
            value = None
        values.append(value)
        logger.info("final run, seed %d: %s %s", seed, search.metric_key,
                    "failed" if value is None else format_metric(value))
    mean, std = spread([value for value in values if value is not None])
    final = {"trial": number, "params": params, "metric": search.metric_key, "seeds": seeds, "values": values,
             "failures": failures, "mean": mean, "std": std, "search_best": result.best_value}
    if comm.is_main_process():
        atomic_write_json(final, path)
    return final
