"""``visiontune tune``: hyper-parameter search with Optuna over ordinary training runs.

:func:`tune` runs the study of ``config.tune`` (the ``tune`` section of the schema); :mod:`.space` parses the
distribution specs, :mod:`.trials` runs one trial (with the pruning hook), :mod:`.final` retrains the best values
with other seeds, :mod:`.report` writes ``trials.csv``, ``best.yaml`` and ``report.html``, :mod:`.tracking` logs the
study to MLflow (``train.trackers`` with ``mlflow``).
"""

from visiontune.tune.report import format_tune_summary
from visiontune.tune.space import SPEC_SYNTAX, ParamSpec, parse_space, parse_spec
from visiontune.tune.study import tune
from visiontune.tune.trials import TrialPruning
from visiontune.tune.types import TuneResult

__all__ = ["SPEC_SYNTAX", "ParamSpec", "TrialPruning", "TuneResult", "format_tune_summary", "parse_space",
           "parse_spec", "tune"]
