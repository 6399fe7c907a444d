"""`cpbench check --baseline B --candidate C`: the CI gate (exit 0 pass, 1 regression or inconclusive, 2 bad input)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cpbench.base import limits as defaults


def _legacy_baseline(path: Path) -> Path:
    """`--baseline results/<model>/fp16` (the baseline's folder before it was renamed `base`) -> `.../base`, with a
    note, when only the new folder exists. Old records inside any folder read as `base` anyway (cpbench.results.store)."""
    if path.name == "fp16" and not path.exists() and path.with_name("base").is_dir():
        typer.echo(f"note: the baseline recipe 'fp16' is now called 'base'; using {path.with_name('base')}", err=True)
        return path.with_name("base")
    return path


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check(
        ctx: typer.Context,
        baseline: Path = typer.Option(..., "--baseline", "-b", help="Baseline result record(s): a file or directory."),
        candidate: Path = typer.Option(..., "--candidate", "-c", help="Candidate result record(s): file or directory."),
        max_set_size_increase: Optional[float] = typer.Option(
            defaults.MAX_SET_SIZE_INCREASE,
            help="Fail when mean set size grows by more than this many options (per task and score).",
        ),
        min_coverage: Optional[float] = typer.Option(
            defaults.MIN_COVERAGE, help="Fail when candidate coverage falls below this (unchecked by default)."
        ),
        max_accuracy_drop: Optional[float] = typer.Option(
            defaults.MAX_ACCURACY_DROP,
            help="Fail when accuracy drops by more than this (0-1 scale, e.g. 0.02 = 2 points; 1 = unchecked).",
        ),
        max_flip_rate: Optional[float] = typer.Option(
            defaults.MAX_FLIP_RATE, help="Fail when the share of items the baseline got right and the candidate gets "
            "wrong exceeds this (1 = unchecked).",
        ),
        decision: str = typer.Option(
            "interval", "--decision", metavar="interval|point",
            help="interval: pass/fail/inconclusive from item-level confidence bounds (needs the records' logits "
            "artifacts); point: compare point estimates with the limits (the old behaviour).",
        ),
        on_inconclusive: str = typer.Option(
            "fail", "--on-inconclusive", metavar="fail|warn",
            help="What an inconclusive cell (the data cannot show the limit held or broken) does to the exit code.",
        ),
        multiplicity: str = typer.Option(
            "holm", "--multiplicity", metavar="holm|bonferroni|none",
            help="Family-wise adjustment over every (cell, limit) of the run.",
        ),
        level: float = typer.Option(0.95, "--level", help="One-sided confidence of each bound (before adjustment)."),
        boot: int = typer.Option(300, "--boot", help="Item bootstrap replicates per cell."),
        seed: int = typer.Option(0, "--seed", help="Seed of the item bootstrap."),
        allow_missing: bool = typer.Option(
            False, "--allow-missing", help="Do not fail when a baseline cell has no candidate result."
        ),
        until_decided: bool = typer.Option(
            False, "--until-decided",
            help="Results of `cpbench run --until-decided`: replay its looks on the stored artifacts under the run's "
            "design (read from the records: no flags to repeat); the verdict is the sequential gate's.",
        ),
        max_items: Optional[int] = typer.Option(
            None, "--max-items", metavar="N",
            help="--until-decided: the run's --max-items (only for results without a stored design; else must agree).",
        ),
        spending: Optional[str] = typer.Option(None, "--spending", metavar="pocock|obf|linear", help="The run's."),
        first_look: Optional[int] = typer.Option(None, "--first-look", metavar="N", help="The run's --first-look."),
        futility: Optional[float] = typer.Option(
            None, "--futility", metavar="LEVEL",
            help="--until-decided: the run's --futility level (results with a stored design replay with its level: "
            "must agree; results without one predate the futility stop and replay without it unless given).",
        ),
        allow_undecided: bool = typer.Option(
            False, "--allow-undecided",
            help="Exit 0 even when no cell was decided (all inconclusive, missing or new); without it such a "
            "report fails, whatever --on-inconclusive and --allow-missing say.",
        ),
        summary: Optional[Path] = typer.Option(None, help="Write a Markdown summary here (for a CI step summary)."),
        junit: Optional[Path] = typer.Option(None, help="Write JUnit XML here."),
    ) -> None:
        """Compare candidate results with baseline results; exit 1 when uncertainty regresses beyond the limits."""
        from cpbench.base.atomic import write_text_atomic
        from cpbench.base.errors import CpbenchError
        from cpbench.results.gate import Decision, Limits, junit_xml, markdown_summary, run_gate, text_table

        if boot < 50:
            raise CpbenchError(f"--boot must be >= 50, got {boot}")
        limits = Limits(max_set_size_increase, min_coverage, max_accuracy_drop, allow_missing, max_flip_rate)
        dec = Decision(mode=decision, on_inconclusive=on_inconclusive, multiplicity=multiplicity, level=level,
                       n_boot=boot, seed=seed)
        baseline = _legacy_baseline(baseline)
        if until_decided:
            from cpbench.run.seqrun import check_design, replay

            # flags set on the command line (not defaults) must agree with the design stored with the results
            names = ("max_items", "spending", "first_look", "futility", "max_set_size_increase", "min_coverage",
                     "max_accuracy_drop", "max_flip_rate", "level", "multiplicity", "seed")  # fmt: skip
            def set_here(n: str) -> bool:  # by name: typer may vendor its own click (another enum)
                return getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"

            given = {n: ctx.params[n] for n in names if set_here(n)}
            if futility is not None:
                from cpbench.results.analysis.sequential import futility_level

                given["futility"] = futility_level(futility)  # a bad level: one line, exit 2
            if set_here("boot"):
                given["n_boot"] = boot
            design, limits, dec = check_design(candidate, given, limits, dec)
            typer.echo(f"cpbench check --until-decided: {design.describe()}; limits: {limits.describe()}", err=True)
            _, report = replay(baseline, candidate, limits, dec, design)
        elif max_items is not None or spending is not None or first_look is not None or futility is not None:
            raise CpbenchError("--max-items, --spending, --first-look and --futility apply to --until-decided")
        else:
            report = run_gate(baseline, candidate, limits, dec)
        report.allow_undecided = allow_undecided
        typer.echo(text_table(report), nl=False)
        if summary is not None:  # overwritten, not appended: in CI `cat` it into $GITHUB_STEP_SUMMARY
            write_text_atomic(summary, markdown_summary(report))
        if junit is not None:
            write_text_atomic(junit, junit_xml(report))
        if report.exit_code:
            raise typer.Exit(code=report.exit_code)
