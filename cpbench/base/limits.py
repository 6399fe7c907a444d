"""The one decision configuration: default limits shared by `cpbench run` (its end-of-run gate and decoupling
verdicts), `cpbench check`, the Python API and the GitHub Action. Plain numbers, no imports: the CLI reads them at
start-up. Why these values: a compressed model passes when it provably loses at most 2 accuracy points, flips at
most 5% of the items it got right to wrong, and grows its mean prediction set by at most a quarter of an option
(docs/ci-gate.md). Decoupling's "accuracy kept" tolerance is the accuracy limit and "set size holds" the set-size
limit, so a run's verdicts and a later `cpbench check` on the same records say the same thing."""

MAX_SET_SIZE_INCREASE = 0.25  # options
MAX_ACCURACY_DROP = 0.02  # absolute, 0-1 scale
MAX_FLIP_RATE = 0.05  # share of items the baseline got right and the candidate gets wrong
MIN_COVERAGE = None  # unchecked by default: coverage holds at the conformal level for any model (docs/conformal.md)
