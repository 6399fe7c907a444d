"""CLI-side console and third-party log control. Only the CLI calls this module: library code never changes
logging levels, warning filters or streams.

- `make_console()`: a rich Console that never hard-wraps (soft wrap; on a non-terminal an effectively unlimited
  width, so tables and paths stay on one line in log files).
- `quiet_third_party(verbose)`: for the duration of a command, llm-compressor's and compressed-tensors' loguru
  output goes to the log file (or is disabled when they were imported before), transformers / datasets / accelerate / huggingface_hub loggers are set to errors only, hub and
  datasets progress bars are off, and whatever third-party code still writes to sys.stdout / sys.stderr (tqdm bars,
  warnings, prints) goes to a log file instead of the console. With `verbose` nothing is changed. Everything is
  restored on exit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

LOGURU_PACKAGES = ("llmcompressor", "compressed_tensors", "auto_round")
STDLIB_LOGGERS = ("transformers", "datasets", "accelerate", "huggingface_hub", "torch", "urllib3", "filelock",
                  "gguf", "optimum", "gptqmodel")  # fmt: skip
ENV_QUIET = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
WIDE = 10_000  # columns when the output is not a terminal: no line is ever broken by the console


def make_console(file: TextIO | None = None, stderr: bool = False) -> Any:
    """A Console that soft-wraps (a terminal wraps long lines itself, nothing is cut into two lines) and, when the
    output is a file or a pipe, has no width limit."""
    from rich.console import Console

    # Bind the stream now: rich otherwise looks up sys.stdout at every print, which quiet_third_party redirects.
    file = file or (sys.stderr if stderr else sys.stdout)
    probe = Console(file=file, stderr=stderr)
    if probe.is_terminal:
        return Console(file=file, stderr=stderr, soft_wrap=True)
    return Console(file=file, stderr=stderr, soft_wrap=True, width=WIDE, no_color=True, highlight=False)


class _Redirect(io.TextIOBase):
    """Where third-party writes go while quiet: the log file (or nowhere). Libraries that captured the stream
    object (a logging handler or loguru sink created during the command) keep a reference to it; after the command
    it forwards to the original stream, so those handlers never write to a closed file."""

    def __init__(self, log: TextIO | None, after: TextIO):
        self.target: TextIO | None = log
        self.after = after
        self.quiet = True

    def release(self) -> None:
        self.quiet = False

    def write(self, s: str) -> int:
        stream = self.target if self.quiet else self.after
        if stream is not None:
            with contextlib.suppress(ValueError, OSError):  # closed or full: never fail the command over a log line
                stream.write(s)
        return len(s)

    def flush(self) -> None:
        stream = self.target if self.quiet else self.after
        if stream is not None:
            with contextlib.suppress(ValueError, OSError):
                stream.flush()

    def isatty(self) -> bool:  # tqdm and friends: not a terminal, no cursor tricks
        return False


@contextlib.contextmanager
def quiet_third_party(verbose: bool, log_path: Path | None = None) -> Iterator[Path | None]:
    """Keep third-party logs out of the console (see module doc). Yields the log file path (None when verbose or
    when no log file could be opened: output is then dropped)."""
    if verbose:
        yield None
        return
    saved_env = {k: os.environ.get(k) for k in ENV_QUIET}
    for k, v in ENV_QUIET.items():
        os.environ.setdefault(k, v)
    saved_levels = {name: logging.getLogger(name).level for name in STDLIB_LOGGERS}
    _set_library_verbosity(error=True)
    for name in STDLIB_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # A package imported during the command configures loguru with a sink on the sys.stdout of that moment (our
    # redirect, so its lines land in the log file); one imported before has a sink on the real stdout: disable it.
    loguru = _loguru()
    disabled = [p for p in LOGURU_PACKAGES if p in sys.modules] if loguru is not None else []
    for pkg in disabled:
        loguru.disable(pkg)
    log: TextIO | None = None
    if log_path is not None:
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError:
            log, log_path = None, None
    out, err = _Redirect(log, sys.stdout), _Redirect(log, sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield log_path
    finally:
        for r in (out, err):
            r.flush()
            r.release()
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()
        for pkg in disabled:
            loguru.enable(pkg)
        _set_library_verbosity(error=False)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _loguru() -> Any:
    try:
        from loguru import logger
    except ImportError:
        return None
    return logger


_saved_verbosity: dict[str, Any] = {}


def _set_library_verbosity(error: bool) -> None:
    """transformers/datasets keep their own level and progress-bar switches once imported; set (or restore) them
    only when the library is already imported (importing it here would cost seconds for `cpbench leaderboard`)."""
    tf = sys.modules.get("transformers")
    if tf is not None:
        tlog = tf.utils.logging
        if error:
            _saved_verbosity["transformers"] = tlog.get_verbosity()
            tlog.set_verbosity_error()
        elif "transformers" in _saved_verbosity:
            tlog.set_verbosity(_saved_verbosity.pop("transformers"))
    ds = sys.modules.get("datasets")
    if ds is not None and hasattr(ds, "utils") and hasattr(ds.utils, "logging"):
        dlog = ds.utils.logging
        if error:
            _saved_verbosity["datasets"] = dlog.get_verbosity()
            dlog.set_verbosity_error()
        elif "datasets" in _saved_verbosity:
            dlog.set_verbosity(_saved_verbosity.pop("datasets"))
