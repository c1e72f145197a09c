"""Self-contained HTML reports: one page per run (:func:`write_run_report`), per dataset check
(:func:`write_data_report`) and a comparison of runs (:func:`compare_runs`).

The pages embed every image as a data URI, need no JavaScript and no network, and are built from files alone
(the run folder, or plain lists of paths / labels / boxes), so they open on any machine. This package imports
only ``visiontune.utils`` / ``visiontune.config``, numpy, matplotlib (Agg canvas) and PIL.
"""

from visiontune.report.compare import compare_runs, write_comparison
from visiontune.report.data_report import write_data_report
from visiontune.report.run_report import write_run_report

__all__ = ["compare_runs", "write_comparison", "write_data_report", "write_run_report"]
