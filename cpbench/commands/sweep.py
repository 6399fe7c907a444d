"""`cpbench sweep`: a grid of models x recipes x tasks x prompts run by a local process, a Ray cluster or SLURM.

Heavy libraries (torch, ray, submitit) are imported inside the command body only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cpbench.base.paths import DEFAULT_RESULTS

from cpbench.commands.run import _csv


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep(
        models: Optional[str] = typer.Option(None, "--models", metavar="M1,M2", help="Models (registry names, HF "
                                             "ids, local directories); default: the suite's model."),
        quant: Optional[str] = typer.Option(None, "--quant", "-q", metavar="Q", help="Recipes (names, sweeps, brace "
                                            "specs), comma-separated; the baseline is always a unit too."),
        candidate: Optional[list[str]] = typer.Option(None, "--candidate", metavar="PATH_OR_HF_ID", help="A "
                                                      "compressed checkpoint judged against the (one) --models base; "
                                                      "repeatable. Each candidate is a unit."),
        candidate_name: Optional[list[str]] = typer.Option(None, "--candidate-name", metavar="NAME"),
        suite: Optional[str] = typer.Option(None, "--suite", metavar="NAME", help="Suite giving every value not set."),
        tasks: Optional[str] = typer.Option(None, "--tasks", metavar="qa,rc,..."),
        prompts: Optional[str] = typer.Option(None, "--prompts", metavar="base,shared,task"),
        shots: Optional[int] = typer.Option(None, "--shots", metavar="K"),
        chat: Optional[str] = typer.Option(None, "--chat", metavar="none|v1|v2"),
        scoring: Optional[str] = typer.Option(None, "--scoring", metavar="letter|cloze"),
        data: Optional[str] = typer.Option(None, "--data", metavar="samples|prepared|original|PATH"),
        limit: Optional[int] = typer.Option(None, "--limit", metavar="N"),
        device: Optional[str] = typer.Option(None, "--device", metavar="auto|cpu|cuda", help="On the workers."),
        scorer: Optional[str] = typer.Option(None, "--scorer", metavar="BACKEND", help="hf (default) or vllm."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", metavar="B"),
        chunk_size: Optional[int] = typer.Option(None, "--chunk-size", metavar="C"),
        results: Path = typer.Option(Path(DEFAULT_RESULTS), "--results", metavar="DIR", help="Results root (written by "
                                     "the driver only)."),
        alpha: float = typer.Option(0.1, "--alpha"),
        executor: str = typer.Option("local", "--executor", metavar="local|ray|slurm"),
        address: Optional[str] = typer.Option(None, "--address", metavar="auto|HOST:PORT", help="Ray cluster "
                                              "(default: start a local one)."),
        max_parallel: int = typer.Option(4, "--max-parallel", metavar="N", help="Units in flight at once."),
        retries: int = typer.Option(2, "--retries", metavar="N", help="Reruns of a unit whose worker died."),
        unit_timeout: float = typer.Option(48.0, "--unit-timeout", metavar="HOURS", help="Per-unit wall limit."),
        gpus_per_unit: Optional[float] = typer.Option(None, "--gpus-per-unit", metavar="G", help="Override the "
                                                      "GPUs estimated from model size and recipe."),
        gpu_memory: float = typer.Option(80.0, "--gpu-memory", metavar="GB", help="Memory of one GPU (estimates)."),
        slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition"),
        slurm_gpus_per_node: Optional[int] = typer.Option(None, "--slurm-gpus-per-node", help="GPUs per job "
                                                          "(default: the largest estimate of the array; 0 on CPU)."),
        slurm_time: int = typer.Option(24 * 60, "--slurm-time", metavar="MIN", help="SLURM time limit per job."),
        slurm_folder: Path = typer.Option(Path("slurm-logs"), "--slurm-folder", metavar="DIR", help="submitit's "
                                          "folder: must be on a filesystem shared with the compute nodes."),
        slurm_cluster: Optional[str] = typer.Option(None, "--slurm-cluster", metavar="slurm|local", hidden=True),
        dry_run: bool = typer.Option(False, "--dry-run", help="List units, what is cached, GPU memory and "
                                     "GPU-hours; run nothing."),
    ) -> None:
        """Run a grid of models x recipes (each a unit: compress once, score all its cells) on an executor."""
        from rich.console import Console

        from cpbench.base.errors import CpbenchError
        from cpbench.sweep import driver, estimate
        from cpbench.sweep.grid import grid_units

        if executor not in ("local", "ray", "slurm"):
            raise CpbenchError(f"unknown executor {executor!r} (use local, ray or slurm)")
        if max_parallel < 1:
            raise CpbenchError(f"--max-parallel must be >= 1, got {max_parallel}")
        console = Console(width=max(200, Console().width))  # the plan table: no truncated cells in logs

        def echo(s: str) -> None:
            console.print(s, markup=False, highlight=False, soft_wrap=True)  # one line per event, never wrapped

        plan, units = grid_units(
            _csv(models), suite=suite, quant=_csv(quant), tasks=_csv(tasks), prompts=_csv(prompts), shots=shots,
            chat=chat, scoring=scoring, data=data, limit=limit, device=device, batch_size=batch_size,
            chunk_size=chunk_size, results=results, alpha=alpha, scorer=scorer,
            **({"candidates": candidate, "candidate_names": candidate_name} if candidate else {}),
        )  # fmt: skip
        states = driver.survey(units, plan.results, plan.device, echo)
        for st in states:
            st.estimate = estimate.estimate_unit(
                st.unit.model, st.unit.recipe, st.items, st.estimate.prompt_tokens * 4 if st.estimate else 0,
                gpu_memory_gb=gpu_memory, gpus=None if gpus_per_unit is None else int(max(1, gpus_per_unit)),
            )  # fmt: skip
        if executor == "local":
            from cpbench.weights import models as _models
            from cpbench.run.preflight import device_problem

            _models.configure_threads()
            local_dev = _models.resolve_device(plan.device)
            for st in states:
                problem = device_problem(st.unit.recipe, local_dev)
                if problem and st.status == driver.QUEUED:
                    st.status, st.reason = driver.SKIPPED, problem
        _print_plan(console, states, executor, dry_run, plan.device)
        if dry_run:
            return
        opts = driver.DriverOptions(max_parallel=1 if executor == "local" else max_parallel, retries=retries,
                                    unit_timeout_s=unit_timeout * 3600, device=plan.device)  # fmt: skip
        if executor == "local":
            from cpbench.sweep.executors import LocalExecutor

            ex = LocalExecutor()
        elif executor == "ray":
            from cpbench.sweep.executors import RayExecutor

            ex = RayExecutor(address, retries=retries, gpus_per_unit=gpus_per_unit, echo=echo)
        else:
            from cpbench.sweep.executors import SubmititExecutor

            ex = SubmititExecutor(slurm_folder, cluster=slurm_cluster, partition=slurm_partition,
                                  gpus_per_node=slurm_gpus_per_node, time_min=slurm_time, max_parallel=max_parallel,
                                  echo=echo)  # fmt: skip
        outcome = driver.run_sweep(states, ex, plan.results, opts, echo)
        for line in driver.summary_lines(outcome):
            echo(line)
        if outcome.failed:
            raise typer.Exit(1)


def _checkpoint_state(unit, device: str) -> str:
    """Whether this machine's checkpoint cache holds the unit's compressed checkpoint (what a local run or a worker on
    this node would reuse): cached / compress / - (nothing to compress) / ? (cannot tell offline)."""
    from cpbench.weights.compress import cache, checkpoint_key
    from cpbench.base.errors import CpbenchError

    if unit.candidate is not None or unit.recipe.is_baseline or unit.recipe.load_time:
        return "-"
    try:
        key = checkpoint_key(unit.model, unit.recipe, unit.options.calibration, device)
    except CpbenchError:
        return "?"
    return "cached" if key is not None and cache.lookup(key) is not None else "compress"


def _print_plan(console, states, executor: str, dry_run: bool, device: str = "auto") -> None:
    from rich.table import Table

    from cpbench.sweep import driver

    dev_type = "cuda" if device.startswith("cuda") or (device == "auto" and executor != "local") else "cpu"

    table = Table(title=f"cpbench sweep ({executor}): {len(states)} unit(s)"
                  + (" — dry run, nothing is submitted" if dry_run else ""))  # fmt: skip
    for col, j in (("unit", "left"), ("state", "left"), ("checkpoint", "left"), ("cells todo", "right"),
                   ("cached", "right"),
                   ("items", "right"), ("params B", "right"), ("GPU mem GB", "right"), ("GPUs", "right"),
                   ("GPU-h", "right")):  # fmt: skip
        table.add_column(col, justify=j, no_wrap=True)
    total_h = 0.0
    for st in states:
        e = st.estimate
        todo = len(st.todo.cells) if st.todo is not None else 0
        state = {driver.DONE: "done", driver.SKIPPED: f"skip: {st.reason[:40]}"}.get(st.status, "todo")
        h = e.gpu_hours if e is not None and st.status == driver.QUEUED else None
        total_h += h or 0.0
        ckpt = _checkpoint_state(st.unit, dev_type) if dry_run and st.status == driver.QUEUED else ""
        table.add_row(st.name, state, ckpt, str(todo), str(st.cells_done), str(st.items),
                      "-" if e is None or e.params_b is None else f"{e.params_b:g}",
                      "-" if e is None or e.gpu_mem_gb is None else f"{e.gpu_mem_gb:g}",
                      str(e.gpus if e is not None else "-"), "-" if h is None else f"{h:.3g}")  # fmt: skip
    console.print(table)
    console.print(f"estimated GPU-hours for the work left: {total_h:.3g} (planning figure: see "
                  f"cpbench/sweep/estimate.py)", markup=False, highlight=False)  # fmt: skip
