"""What the benchmark concludes from a results tree: decoupling, thresholds, size effect (numpy/pandas only)."""

from cpbench.results.analysis.aggregate import add_task_average
from cpbench.results.analysis.decoupling import DecouplingConfig, categorize, decoupling_table, rank_agreement
from cpbench.results.analysis.size_effect import size_effect_table
from cpbench.results.analysis.thresholds import ThresholdFit, fit_threshold, threshold_table

__all__ = [
    "DecouplingConfig",
    "ThresholdFit",
    "add_task_average",
    "categorize",
    "decoupling_table",
    "fit_threshold",
    "rank_agreement",
    "size_effect_table",
    "threshold_table",
]
