"""Optional experiment-tracker logging of a `cpbench run` summary (`--log wandb` / `--log mlflow`), off by default.

The tracker package is imported only when asked for (extras `cpbench[wandb]`, `cpbench[mlflow]`); a missing package
is one line before any work starts (`check`). What is logged is the run summary of `cpbench.run.summary`: the plan
as config/params, one metric per (recipe, task, prompt, score, quantity), the decoupling category as a tag/summary
value, and the summary JSON itself as an artifact. Tracker settings (project, entity, tracking URI, offline mode)
come from the trackers' own environment variables (WANDB_PROJECT, WANDB_MODE, MLFLOW_TRACKING_URI, ...).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

from cpbench.base.errors import CpbenchError

TRACKERS = {"wandb": "wandb", "mlflow": "mlflow"}


def parse(value: str | None) -> list[str]:
    if not value:
        return []
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    for n in names:
        if n not in TRACKERS:
            raise CpbenchError(f"--log {n!r}: use wandb or mlflow")
    return list(dict.fromkeys(names))


def check(names: list[str]) -> None:
    """Fail before the run when a requested tracker's package is missing."""
    for n in names:
        if importlib.util.find_spec(TRACKERS[n]) is None:
            raise CpbenchError(f"--log {n} needs the {n} package: pip install 'cpbench[{n}]'")


def metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Flat metric names -> values: `<recipe>/<task>/<prompt>/acc`, `.../<score>/set_size`, `.../d_acc`, ..."""
    out: dict[str, float] = {}

    def put(name: str, v: Any) -> None:
        if isinstance(v, (int, float)) and v == v:  # not NaN
            out[re.sub(r"[^A-Za-z0-9_./-]", "-", name)] = float(v)

    for c in summary["cells"]:
        stem = f"{c['recipe']}/{c['task']}/{c['prompt']}"
        put(f"{stem}/acc", c.get("acc"))
        for s in ("lac", "aps"):
            for m, v in (c.get(s) or {}).items():
                if not m.endswith(("_ci95", "_split_range95")):
                    put(f"{stem}/{s}/{m}", v)
    for d in summary["comparisons"]:
        stem = f"{d['recipe']}/{d['task']}/{d['prompt']}/{d['score']}"
        for m in ("acc", "coverage", "set_size", "uacc"):
            put(f"{stem}/d_{m}", d.get(f"d_{m}"))
    return out


def log_run(names: list[str], summary: dict[str, Any], summary_path: Path) -> list[str]:
    """Log to each tracker; returns one line per tracker saying where it went."""
    lines = []
    for n in names:
        lines.append(_LOGGERS[n](summary, summary_path))
    return lines


def _config(summary: dict[str, Any]) -> dict[str, Any]:
    plan = dict(summary["plan"])
    analysis = plan.pop("analysis", {}) or {}
    cfg = {"model": summary["model"], "baseline": summary["baseline"], **plan}
    cfg.update({f"analysis.{k}": v for k, v in analysis.items()})
    return {k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in cfg.items()}


def _wandb(summary: dict[str, Any], summary_path: Path) -> str:
    wandb = importlib.import_module("wandb")
    run = wandb.init(job_type="cpbench-run", name=f"{summary['model']}-{summary['created_at']}",
                     config=_config(summary), reinit=True)  # fmt: skip
    try:
        run.log(metrics(summary))
        for d in summary["comparisons"]:
            run.summary[f"{d['recipe']}/{d['task']}/{d['prompt']}/{d['score']}/category"] = d["category"]
        art = wandb.Artifact(f"cpbench-run-{re.sub(r'[^A-Za-z0-9_.-]', '-', summary['model'])}", type="cpbench-run")
        art.add_file(str(summary_path))
        run.log_artifact(art)
        where = getattr(run, "url", None) or getattr(run, "dir", "")
    finally:
        run.finish()
    return f"logged to Weights & Biases: {where}"


def _mlflow(summary: dict[str, Any], summary_path: Path) -> str:
    mlflow = importlib.import_module("mlflow")
    with mlflow.start_run(run_name=f"{summary['model']}-{summary['created_at']}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in _config(summary).items()})
        mlflow.log_metrics(metrics(summary))
        mlflow.set_tags({f"{d['recipe']}/{d['task']}/{d['prompt']}/{d['score']}/category": str(d["category"])
                         for d in summary["comparisons"]})  # fmt: skip
        mlflow.log_artifact(str(summary_path))
        run_id = run.info.run_id
    return f"logged to MLflow ({mlflow.get_tracking_uri()}): run {run_id}"


_LOGGERS = {"wandb": _wandb, "mlflow": _mlflow}
