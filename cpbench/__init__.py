"""cpbench: conformal-prediction benchmark for compressed LLMs.

Data flows one way: registry -> compress -> score (option-logits artifact) -> conformal -> metrics -> results ->
leaderboards. Everything after the artifact is numpy/pandas only and runs anywhere.
"""

__version__ = "0.1.0"
