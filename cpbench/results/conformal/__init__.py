"""Split conformal prediction in numpy: scores, quantile rules, splits, the many-splits engine, metrics.

See docs/conformal.md for definitions and the two protocols (default, ye2024).
"""

from cpbench.results.conformal.engine import SplitResults, evaluate
from cpbench.results.conformal.estimator import SplitConformal
from cpbench.results.conformal.quantile import conformal_quantile, order_statistic
from cpbench.results.conformal.scores import ScoreTable, aps, aps_ye2024, build, lac, lac_ye2024, raps, softmax
from cpbench.results.conformal.splits import canonical_order, random_splits, sklearn_split

__all__ = [
    "ScoreTable",
    "SplitConformal",
    "SplitResults",
    "aps",
    "aps_ye2024",
    "build",
    "canonical_order",
    "conformal_quantile",
    "evaluate",
    "lac",
    "lac_ye2024",
    "order_statistic",
    "random_splits",
    "raps",
    "sklearn_split",
    "softmax",
]
