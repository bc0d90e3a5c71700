"""Simulated online A/B tests (the paper's live experiment, rehearsed in the simulator).

``run_experiment(ExperimentConfig(...))`` simulates the test, ``analyze`` computes lifts, CIs,
p-values, MDE and the SRM check, ``write_report`` writes ``report.json``/``report.md``/``daily.png``.
``rlur abtest`` drives all three. See ``docs/abtest.md``.
"""

from rlur.abtest.analysis import METRICS, analyze, ratio_stats, relative_lift
from rlur.abtest.assignment import assign_arms, hash_unit, parse_shares, srm_test
from rlur.abtest.experiment import ExperimentConfig, ExperimentResult, UserDayTable, run_experiment
from rlur.abtest.report import build_report, write_report

__all__ = [
    "METRICS",
    "ExperimentConfig",
    "ExperimentResult",
    "UserDayTable",
    "analyze",
    "assign_arms",
    "build_report",
    "hash_unit",
    "parse_shares",
    "ratio_stats",
    "relative_lift",
    "run_experiment",
    "srm_test",
    "write_report",
]
