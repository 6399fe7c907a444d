"""The `cpbench` command line.

Each stage's commands live in `cpbench/commands/<stage>.py` and expose `register(app)`. Command modules import only
typer and light modules at top level and import heavy libraries (torch, transformers) inside the command body, so that
`cpbench analyze` stays numpy-only and starts fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import MutableMapping
from typing import Optional

import click
import typer

from cpbench import __version__
from cpbench.base.errors import CpbenchError

# typer >= 0.22 vendors click as `typer._click` and raises its own exception classes, which are not click's: catch
# both, or a usage error (`--alpha abc`, a missing argument, bare `cpbench`) escapes `main` as a traceback.
try:
    from typer._click import exceptions as _typer_click
except ImportError:  # older typer: plain click
    _typer_click = click.exceptions
_USAGE_ERRORS = (click.exceptions.ClickException, _typer_click.ClickException)
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)
_INTERRUPTED = "cpbench: interrupted; finished results are kept, rerun the same command to resume"
_TERMINATED = "cpbench: terminated (SIGTERM); finished results are kept, rerun the same command to resume"

app = typer.Typer(
    name="cpbench",
    help="Does compression preserve an LLM's ability to know what it doesn't know? Split conformal prediction "
    "over six-option tasks, for compressed vs uncompressed models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Stage modules, in data-flow order. A module that is missing (not yet built) is skipped, not fatal.
COMMAND_MODULES = ("tasks", "run", "sweep", "analyze", "leaderboard", "check", "registry")


# Import name -> (distribution, extra) of what the optional extras bring (tests/test_reliability.py checks it
# against pyproject.toml). A command that needs one on a bare install says which extra to install, in one line.
EXTRA_MODULES: dict[str, tuple[str, str]] = {
    "torch": ("torch", "run"), "transformers": ("transformers", "run"), "llmcompressor": ("llmcompressor", "run"),
    "compressed_tensors": ("compressed-tensors", "run"), "accelerate": ("accelerate", "run"),
    "safetensors": ("safetensors", "run"), "datasets": ("datasets", "run"), "gguf": ("gguf", "run"),
    "tqdm": ("tqdm", "run"), "huggingface_hub": ("huggingface-hub", "run"), "tokenizers": ("tokenizers", "run"),
    "bitsandbytes": ("bitsandbytes", "gpu"), "gptqmodel": ("gptqmodel", "gpu"), "optimum": ("optimum", "gpu"),
    "ray": ("ray", "scale"), "submitit": ("submitit", "scale"), "vllm": ("vllm", "vllm"),
    "matplotlib": ("matplotlib", "plots"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow"),
}  # fmt: skip


MAX_ERROR_CHARS = 1000


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error as one line of at most `limit` characters: a message quoting hostile input (a 100,000-option item,
    a megabyte of id) keeps its head and tail and says how much was cut."""
    text = " ".join(message.split())
    if len(text) <= limit:
        return text
    head, tail = int(limit * 0.7), int(limit * 0.2)
    return f"{text[:head]} ... [{len(text) - head - tail:,} characters cut] ... {text[-tail:]}"


def missing_extra_message(exc: ModuleNotFoundError, argv: Optional[list[str]]) -> Optional[str]:
    """One line naming the extra to install for a missing optional module, or None (not one of ours)."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRA_MODULES:
        return None
    dist, extra = EXTRA_MODULES[top]
    words = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")]
    command = f"cpbench {words[0]}" if words else "this command"
    return f"{command} needs {dist}, which the base install does not include: pip install 'cpbench[{extra}]'"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cpbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """cpbench: conformal-prediction benchmark for compressed LLMs."""


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"cpbench.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"cpbench.commands.{name}":
                continue
            raise
        module.register(app)


_register_all()


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: bad input becomes one line on stderr and exit code 2. Ctrl-C and SIGTERM (SLURM's time limit
    or preemption) unwind the same way (locks released, staging folders removed, finished results kept) and end with
    one line: exit 130 after Ctrl-C, 143 after SIGTERM (128 + the signal, as a shell reports it)."""
    from cpbench.base.interrupts import EXIT_TERMINATED, terminate_as_interrupt

    with terminate_as_interrupt() as state:
        rv = _main(argv)
    if state["terminated"] and rv == 130:
        print(_TERMINATED, file=sys.stderr)
        return EXIT_TERMINATED
    if rv == 130:
        print(_INTERRUPTED, file=sys.stderr)
    return rv


def _main(argv: Optional[list[str]]) -> int:
    try:
        rv = app(args=argv, prog_name="cpbench", standalone_mode=False)
    except CpbenchError as exc:
        print(f"cpbench: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # the bare install (`pip install cpbench`): name the extra, no traceback
        msg = missing_extra_message(exc, argv)
        if msg is None:
            raise
        print(f"cpbench: error: {msg}", file=sys.stderr)
        return 2
    except _EXITS as exc:
        return exc.exit_code
    except _USAGE_ERRORS as exc:  # usage errors: click's message on one line, exit 2
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `cpbench` / `cpbench tasks`: the help, not an error
            if exc.format_message().strip():
                typer.echo(exc.format_message())
            return 0
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"cpbench: error: {' '.join(exc.format_message().split())}{hint}", file=sys.stderr)
        return exc.exit_code
    except _ABORTS:  # the line is printed by `main` (it knows whether SIGTERM caused it)
        return 130
    # typer turns KeyboardInterrupt into Exit(130), returned as the value in non-standalone mode
    return rv if isinstance(rv, int) else 0


def cpu_thread_defaults(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Process-wide, so the command line's decision (never the library's): OpenMP threads that reach the end of a
    parallel region sleep (OMP_WAIT_POLICY=PASSIVE) instead of spinning. Returns whether it set anything.

    torch's wheels use GNU OpenMP, whose default is to spin after each region (GOMP_SPINCOUNT). Scoring runs
    thousands of small parallel regions; on a shared machine a spinning thread holds a core another of our threads
    (or another process) needs, and the next region waits for it: fp32 letter scoring took 2.26 s/item with the
    default and 0.26 s/item passive on 2 threads beside two busy loops and a 1-thread job (docs/scoring.md). libgomp
    reads the policy once, when torch is loaded, so it is set before anything imports torch, and never when torch
    is already imported; a policy the user chose (OMP_WAIT_POLICY, GOMP_SPINCOUNT, KMP_BLOCKTIME) wins."""
    if "torch" in sys.modules or any(k in environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def entrypoint() -> None:
    cpu_thread_defaults()  # before any command imports torch
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
