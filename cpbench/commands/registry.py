"""`cpbench models list` and `cpbench recipes list`: what the registries hold, and what runs where.

Reads benchmark/models.yaml and benchmark/recipes.yaml only (no torch, no network): sources are reported from what
is installed or cached locally (a PyPI model package, the HF cache), not by asking the hub.
"""

from __future__ import annotations

import json as _json

import typer


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    from cpbench.base.console import make_console

    console = make_console()
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, no_wrap=True)
    for r in rows:
        table.add_row(*r)
    console.print(table)


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="The model registry (benchmark/models.yaml).", no_args_is_help=True)
    recipes_app = typer.Typer(help="The compression recipes (benchmark/recipes.yaml).", no_args_is_help=True)
    app.add_typer(models_app, name="models")
    app.add_typer(recipes_app, name="recipes")

    @models_app.command("list")
    def models_list(
        family: str = typer.Option(None, "--family", help="Only this family (llama, qwen, ...)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per model."),
    ) -> None:
        """Registered models: name, aliases, HF id, size, where the weights come from here, licence."""
        from cpbench.weights import models
        from cpbench.base.config import did_you_mean
        from cpbench.base.errors import CpbenchError

        entries = models.list_models()
        if family is not None:
            fams = sorted({e.family for e in entries})
            entries = [e for e in entries if e.family.lower() == family.lower()]
            if not entries:
                raise CpbenchError(f"--family {family!r} matches no model{did_you_mean(family, fams) or ''} "
                                   f"(families: {', '.join(fams)})")  # fmt: skip
        rows = []
        for e in entries:
            sources = ["hub" + (" (cached)" if models._hub_cached(e) else "")]
            if e.pypi is not None:
                installed = models.pypi_installed(e.pypi)
                sources.append(f"pypi {e.pypi.package} GGUF {e.pypi.quant}" + (" (installed)" if installed else ""))
            used = models.resolve(e.name).source
            if as_json:
                typer.echo(_json.dumps({"name": e.name, "aliases": list(e.aliases), "hf_id": e.hf_id,
                                        "family": e.family, "params_b": e.params_b, "dtype": e.dtype,
                                        "gated": e.gated, "instruct": e.instruct, "license": e.license,
                                        "sources": sources, "default_source": used}))  # fmt: skip
                continue
            rows.append([e.name, ", ".join(e.aliases) or "-", e.hf_id, f"{e.params_b:g}B" if e.params_b else "?",
                         e.dtype, "yes" if e.gated else "no", "; ".join(sources), used, e.license or "-"])  # fmt: skip
        if not as_json:
            _print_table("cpbench models (benchmark/models.yaml); `source` = what `--model NAME` uses here",
                         ["name", "aliases", "hf id", "size", "dtype", "gated", "sources", "source", "licence"],
                         rows)  # fmt: skip

    @recipes_app.command("list")
    def recipes_list(
        device: str = typer.Option(None, "--device", metavar="cpu|cuda", help="Only recipes that run there."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per recipe."),
    ) -> None:
        """Recipes and sweeps: what each does, and whether it runs on a CPU or needs a CUDA GPU."""
        from cpbench.specs import recipes
        from cpbench.base.errors import CpbenchError

        if device not in (None, "cpu", "cuda"):
            raise CpbenchError(f"--device {device!r}: use cpu or cuda")
        rows = []
        for r in recipes.list_recipes():
            needs = "cuda" if (r.requires == "cuda" or r.load_time) else "cpu"
            if device == "cpu" and needs == "cuda":
                continue
            where = "CPU or GPU" if needs == "cpu" else "GPU only"
            why = r.requires_reason if needs == "cuda" else ""
            sweep = f"{r.sweep.name} ({r.sweep.knob} {r.sweep.level:g})" if r.sweep else ""
            if as_json:
                typer.echo(_json.dumps({"name": r.name, "kind": r.kind, "runs_on": where, "requires_reason": why,
                                        "description": r.description, "sweep": sweep or None,
                                        "spec": r.spec()}, default=str))  # fmt: skip
                continue
            rows.append([r.name, r.kind, where, sweep or "-", r.description + (f" ({why})" if why else "")])
        if not as_json:
            _print_table("cpbench recipes (benchmark/recipes.yaml); the baseline 'base' is always run",
                         ["name", "kind", "runs on", "sweep", "what it does"], rows)  # fmt: skip
            sweeps = recipes.list_sweeps()
            if sweeps:
                typer.echo("sweeps (--quant NAME runs every member): "
                           + ", ".join(s.name for s in sweeps))  # fmt: skip
