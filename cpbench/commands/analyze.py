"""`cpbench analyze`: logits artifacts (or imported outputs) -> conformal result records. numpy only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def _fmt(value: float | None, std: float | None = None, pct: bool = True) -> str:
    if value is None:
        return "-"
    scale = 100.0 if pct else 1.0
    text = f"{value * scale:.2f}" if pct else f"{value:.3f}"
    if std is not None:
        text += f" ±{std * scale:.2f}" if pct else f" ±{std:.3f}"
    return text


def _print_table(records: list[dict], scores: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    first = records[0]["run_key"]["analysis"]
    table = Table(
        title=f"cpbench analyze: protocol {first['protocol']}, alpha {first['alpha']:g}, {first['splits']} split(s); "
        "mean ± std across splits (%; set size in options)"
    )
    table.add_column("input", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("acc", justify="right", no_wrap=True)
    for s in scores:
        up = s.upper()
        table.add_column(f"{up} cov", justify="right", no_wrap=True)
        table.add_column(f"{up} size", justify="right", no_wrap=True)
        table.add_column(f"{up} UAcc", justify="right", no_wrap=True)
    for r in records:
        row = [str(r["input"]), str(r["n"]), _fmt(r["acc"], r["acc_std"])]
        for s in scores:
            m = r[s]
            row += [
                _fmt(m["coverage"], m["coverage_std"]),
                _fmt(m["set_size"], m["set_size_std"], pct=False),
                _fmt(m["uacc"], m["uacc_std"]),
            ]
        table.add_row(*row)
    # Wide enough that no cell wraps (stdout is often not a terminal here: a log, a pipe, CI).
    width = max(len(str(r["input"])) for r in records) + 30 + 45 * len(scores)
    Console(width=max(100, width)).print(table)


def register(app: typer.Typer) -> None:
    @app.command("analyze")
    def analyze(
        logits: List[Path] = typer.Argument(
            ..., metavar="LOGITS...", help="cpbench artifacts (.parquet), LLM-Uncertainty-Bench pickles (.pkl, with "
            "--labels), lm-evaluation-harness --log_samples files (.jsonl), or directories holding them."
        ),
        model: Optional[str] = typer.Option(
            None, "--model", metavar="NAME", help="Model name for the run key (lm-eval: default from the results_*.json "
            "beside the samples). Give the base and the compressed run the same --model so they pair.",
        ),
        recipe: Optional[str] = typer.Option(
            None, "--recipe", metavar="NAME", help="Recipe name for the run key (default base): the compressed run's name.",
        ),
        results: Optional[Path] = typer.Option(
            None, "--results", metavar="DIR", help="Also store the records in this results tree (<model>/<recipe>/), "
            "for cpbench check, leaderboard and decoupling.",
        ),
        labels: Optional[Path] = typer.Option(
            None, "--labels", metavar="DATA.json",
            help="Dataset JSON of the LLM-Uncertainty-Bench task (for .pkl inputs).",
        ),
        protocol: str = typer.Option(
            "default", "--protocol", metavar="default|ye2024",
            help="default: textbook split CP over R seeded splits; ye2024: Ye et al. 2024 exactly (one sklearn split).",
        ),
        alpha: float = typer.Option(0.1, "--alpha", help="Miscoverage level in (0, 1)."),
        scores: str = typer.Option("lac,aps", "--scores", help="Comma-separated: lac, aps, raps, aps_rand, raps_rand."),
        splits: Optional[int] = typer.Option(
            None, "--splits", metavar="R", help="Random splits (default 100; ye2024: 1)."
        ),
        seed: Optional[int] = typer.Option(None, "--seed", metavar="S", help="Split seed (default 0; ye2024: 42)."),
        cal_ratio: Optional[float] = typer.Option(None, "--cal-ratio", help="Calibration fraction (default 0.5)."),
        stratify: bool = typer.Option(False, "--stratify", help="Stratify splits by gold label (default protocol)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object per input per line (no per_split)."),
        out: Optional[Path] = typer.Option(
            None, "--out", help="Write the full record (one input) or a JSON list of records (several) atomically."
        ),
    ) -> None:
        """Split conformal prediction (LAC, APS) over option logits: accuracy, coverage, set size, UAcc."""
        from cpbench.results.conformal.protocols import analyze_artifact, preset, summary_line
        from cpbench.base.atomic import write_json_atomic
        from cpbench.backends.lmeval import expand, import_named, store_artifact

        key = preset(protocol, alpha=alpha, splits=splits, seed=seed, cal_ratio=cal_ratio, stratify=stratify or None)
        records = []
        for path in expand(logits):
            artifact = import_named(path, labels, model=model, recipe=recipe)
            if artifact.logits.shape[1] != 6:  # said once per input: what K != 6 changes (UAcc's sqrt(K), ...)
                from cpbench.backends.pickles import option_count_note

                typer.echo(f"note: {path}: {option_count_note(int(artifact.logits.shape[1]))}", err=True)
            if results is not None:  # the logits go beside the records, as `cpbench run` keeps them (item-level CIs)
                artifact = store_artifact(artifact, results)
            records.append(analyze_artifact(artifact, key, scores.split(","), input_path=str(path)))
        if results is not None:
            from cpbench.results.store import write_result

            for r in records:
                write_result(r, results)
        if out is not None:
            write_json_atomic(out, records[0] if len(records) == 1 else records)
        if as_json:
            for r in records:
                typer.echo(json.dumps(summary_line(r), sort_keys=True, allow_nan=False))
        else:
            _print_table(records, list(records[0]["protocol"]["scores"]))  # the names analyze_artifact normalised
