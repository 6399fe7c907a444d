"""`cpbench sweep`: a grid of (model, recipe) work units run by an existing engine (local, Ray, SLURM via submitit).

- `grid`: options / suite -> `cpbench.run.unit.WorkUnit`s (one per model x recipe, every task x prompt cell inside).
- `estimate`: parameter counts and item counts -> GPU memory, GPUs per unit, GPU-hours (for `--dry-run` and Ray).
- `state`: which cells of a unit are done (artifact with the same run key, prompts and weights id + its record).
- `claims`: a flock per unit in flight, so two sweeps on one results tree do not duplicate work.
- `worker`: what runs on a worker: compress (cached on the node) + score, returning the artifacts as bytes.
- `executors`: local (in-process), Ray core tasks, submitit job arrays.
- `driver`: the loop: plan, skip what is done, claim, submit, collect, write (the driver is the only writer of the
  results tree), live progress, final summary.

Nothing here imports torch at module level; the driver needs no GPU.
"""
