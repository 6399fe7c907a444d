"""`cpbench leaderboard [RESULTS_DIR] [--out leaderboards/]`: tables, HTML page and plots from a results tree."""

from __future__ import annotations

from pathlib import Path

import typer

from cpbench.base import limits as defaults


def register(app: typer.Typer) -> None:
    @app.command("leaderboard")
    def leaderboard(
        results_dir: Path = typer.Argument(Path("results"), help="Results tree written by `cpbench run`/`analyze`."),
        out: Path = typer.Option(Path("leaderboards"), "--out", "-o", help="Output directory."),
        baseline: str = typer.Option("base", help="Baseline recipe each compressed result is compared with."),
        epsilon: float = typer.Option(
            defaults.MAX_ACCURACY_DROP,
            help="Accuracy drop (0-1 scale) still counted as 'accuracy kept' (default: the gate's accuracy limit).",
        ),
        delta: float = typer.Option(
            defaults.MAX_SET_SIZE_INCREASE,
            help="Set-size increase (options) still counted as 'set size holds' (default: the gate's set-size limit).",
        ),
        criterion: str = typer.Option("permutation", help="Threshold criterion: permutation (5% test) or bic."),
        decision: str = typer.Option(
            "interval", "--decision", metavar="interval|point",
            help="interval: categories from item-level tests (needs the records' logits artifacts); point: point "
            "estimates against epsilon and delta (the old rule).",
        ),
        multiplicity: str = typer.Option(
            "holm", "--multiplicity", metavar="holm|bh|bonferroni|none",
            help="Adjustment over the decoupling table's family of statements: holm (family-wise error), bh "
            "(false discovery rate, exploratory tables), bonferroni, none.",
        ),
        boot: int = typer.Option(300, "--boot", help="Item bootstrap replicates per cell."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots (needs matplotlib)."),
        strict: bool = typer.Option(
            False, "--strict",
            help="For CI: a file that is not a usable record (corrupted, impossible, foreign JSON) is an error "
            "(exit 2) instead of a 'skipped' line.",
        ),
        print_summary: bool = typer.Option(
            False, "--print", help="Also print the decoupling, ranking, threshold and size-effect tables."
        ),
    ) -> None:
        """Write Markdown, CSV, LaTeX, an HTML page and plots; report skipped files."""
        from cpbench.results.analysis.decoupling import DecouplingConfig
        from cpbench.base.errors import CpbenchError
        from cpbench.results.leaderboard.build import LeaderboardConfig, build_tables, write_leaderboard

        if baseline == "fp16":  # the baseline's name before it was renamed `base`
            typer.echo("note: --baseline fp16 is now called 'base'; using 'base'", err=True)
            baseline = "base"
        if criterion not in ("permutation", "bic"):
            raise CpbenchError(f"--criterion must be 'permutation' or 'bic', got {criterion!r}")
        if boot < 50:
            raise CpbenchError(f"--boot must be >= 50, got {boot}")
        if not (epsilon >= 0 and delta >= 0):  # written so that NaN fails too (it would compare False everywhere)
            raise CpbenchError(f"--epsilon and --delta must be numbers >= 0, got {epsilon:g} and {delta:g}")
        if not results_dir.exists():
            raise CpbenchError(f"{results_dir}: no such results directory")
        if out.exists() and not out.is_dir():
            raise CpbenchError(f"--out {out}: is a file, expected a directory")
        if plots:
            try:
                import matplotlib
            except ModuleNotFoundError:
                raise CpbenchError("plots need matplotlib (pip install 'cpbench[plots]'), or pass --no-plots") from None
            matplotlib.use("Agg", force=True)  # process-wide, so the CLI decides it (library code never does)
        cfg = LeaderboardConfig(
            decoupling=DecouplingConfig(baseline=baseline, epsilon=epsilon, delta=delta, decision=decision,
                                        multiplicity=multiplicity, item_boot=boot),
            criterion=criterion,  # type: ignore[arg-type]
            plots=plots,
        )
        if strict:
            from cpbench.results.store import load_results

            _, skipped = load_results(results_dir, strict=True)  # corrupted or impossible records raise here
            if skipped:
                more = f" ({len(skipped) - 1} more)" if len(skipped) > 1 else ""
                raise CpbenchError(f"--strict: {skipped[0].path}: {skipped[0].reason}{more}")
        analysis, written = write_leaderboard(results_dir, out, cfg)
        for s in analysis.skipped:
            typer.echo(f"skipped {s.path}: {s.reason}", err=True)
        known = sorted(set(analysis.results["recipe"].astype(str)))
        if baseline not in known:  # every row would be 'unpaired' without saying why at the top
            from cpbench.base.config import did_you_mean

            hint = did_you_mean(baseline, known) or ""
            typer.echo(f"warning: --baseline {baseline!r} matches no recipe in {results_dir}{hint} (recipes: "
                       f"{', '.join(known)}); every comparison is unpaired", err=True)  # fmt: skip
        records = analysis.results.loc[analysis.results["path"] != "", "path"].nunique()
        typer.echo(f"{records} records -> {len(written)} files in {out}/")
        typer.echo(cfg.decoupling.describe())
        if print_summary:
            summaries = ("decoupling", "rankings", "thresholds", "size_effect")
            for table in (t for t in build_tables(analysis, cfg) if t.name in summaries):
                typer.echo("")
                typer.echo(table.markdown(), nl=False)
