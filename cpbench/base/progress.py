"""cpbench's own progress reporting for long steps (GGUF conversion, compression, scoring, analysis).

Library code asks for the active reporter with `current()` and opens a task:

    with progress.current().task("score base qa/base", total=len(items), unit="item") as t:
        ...; t.advance(8)

and never configures output itself. The CLI installs a reporter for the duration of a command with `use(...)`
(a context variable, not process-wide state): on a terminal a rich progress bar with rate and ETA; otherwise
(a log file, CI) plain lines, at most every `interval` seconds or every `step` of the total, plus a heartbeat line
for steps that report nothing for `interval` seconds (a 7-minute compression must not look like a hang).
Without a reporter (library use, tests) `current()` is a no-op.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable


class Task:
    """A handle on one running step: `advance(n)`, `update(completed)`, `set_total(n)`, `note(text)`."""

    def __init__(self, description: str, total: float | None, unit: str):
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.started = time.monotonic()
        self.extra = ""

    def advance(self, n: float = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: float) -> None:
        self.completed = float(completed)
        self._changed()

    def set_total(self, total: float | None) -> None:
        self.total = total
        self._changed()

    def note(self, text: str) -> None:
        """A short status shown next to the bar (e.g. the current layer)."""
        self.extra = text
        self._changed()

    def _changed(self) -> None:  # overridden by reporters
        pass

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rate(self) -> float | None:
        e = self.elapsed
        return self.completed / e if e > 0 and self.completed > 0 else None

    def eta(self) -> float | None:
        r = self.rate()
        if r is None or self.total is None:
            return None
        return max(0.0, (self.total - self.completed) / r)


class Reporter:
    """No-op reporter (the default): tasks are tracked but nothing is shown."""

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "step") -> Iterator[Task]:
        yield Task(description, total, unit)


_current: contextvars.ContextVar[Reporter] = contextvars.ContextVar("cpbench_progress", default=Reporter())


def current() -> Reporter:
    return _current.get()


@contextlib.contextmanager
def use(reporter: Reporter) -> Iterator[Reporter]:
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def status_line(t: Task, final: bool = False) -> str:
    """One plain line: description, count (and %), rate, ETA or elapsed."""
    parts = [t.description]
    done = int(t.completed) if float(t.completed).is_integer() else round(t.completed, 1)
    if t.total:
        parts.append(f"{done}/{int(t.total)} {t.unit}s ({100 * t.completed / t.total:.0f}%)")
    elif t.completed:
        parts.append(f"{done} {t.unit}s")
    r = t.rate()
    if r is not None:
        parts.append(f"{r:.2f} {t.unit}/s" if r >= 1 else f"{1 / r:.2f} s/{t.unit}")
    if t.extra:
        parts.append(t.extra)
    if final:
        parts.append(f"done in {fmt_duration(t.elapsed)}")
    else:
        parts.append(f"elapsed {fmt_duration(t.elapsed)}")
        if t.eta() is not None:
            parts.append(f"ETA {fmt_duration(t.eta())}")
    return ", ".join(parts)


class LineReporter(Reporter):
    """Plain lines for logs and CI: a line at start, then whenever `step` of the total has passed or `interval`
    seconds went by (a heartbeat thread covers steps that do not advance), and one at the end."""

    def __init__(self, write: Callable[[str], None], interval: float = 30.0, step: float = 0.10):
        self.write = write
        self.interval = interval
        self.step = step

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "step") -> Iterator[Task]:
        lock = threading.Lock()
        t = Task(description, total, unit)
        state = {"last_t": time.monotonic(), "last_frac": 0.0}
        write = self.write

        def emit(final: bool = False) -> None:
            state["last_t"] = time.monotonic()
            if t.total:
                state["last_frac"] = t.completed / t.total
            write(status_line(t, final))

        def changed() -> None:
            with lock:
                due = time.monotonic() - state["last_t"] >= self.interval
                if t.total:
                    due = due or t.completed / t.total - state["last_frac"] >= self.step - 1e-9
                if due and (not t.total or t.completed < t.total):
                    emit()

        t._changed = changed  # type: ignore[method-assign]
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(min(self.interval, 5.0)):
                with lock:
                    if time.monotonic() - state["last_t"] >= self.interval:
                        emit()

        write(f"{description}: started" + (f" ({int(total)} {unit}s)" if total else ""))
        thread = threading.Thread(target=heartbeat, name="cpbench-progress", daemon=True)
        thread.start()
        ok = False
        try:
            yield t
            ok = True
        finally:
            stop.set()
            thread.join(timeout=1.0)
            with lock:
                if ok:
                    emit(final=True)
                else:
                    write(f"{description}: stopped after {fmt_duration(t.elapsed)}")


class RichReporter(Reporter):
    """Live rich progress bars (terminals): description, bar, count, rate, elapsed and ETA. One rich Progress is
    shared by nested steps (rich allows one live display at a time); when a step ends its bar is replaced by the same
    one-line summary the plain reporter prints."""

    def __init__(self, console: Any):
        self.console = console
        self._bar: Any = None
        self._open = 0

    def _progress(self) -> Any:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._bar is None:
            columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                       TimeRemainingColumn(), TextColumn("{task.fields[extra]}")]  # fmt: skip
            self._bar = Progress(*columns, console=self.console, transient=True)
            self._bar.start()
        return self._bar

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "step") -> Iterator[Task]:
        t = Task(description, total, unit)
        bar = self._progress()
        self._open += 1
        tid = bar.add_task(description, total=total, rate="", extra="")

        def changed() -> None:
            r = t.rate()
            rate = "" if r is None else (f"{r:.2f} {unit}/s" if r >= 1 else f"{1 / r:.2f} s/{unit}")
            bar.update(tid, completed=t.completed, total=t.total, rate=rate, extra=t.extra)

        t._changed = changed  # type: ignore[method-assign]
        ok = False
        try:
            yield t
            ok = True
        finally:
            bar.remove_task(tid)
            self._open -= 1
            text = status_line(t, final=True) if ok else f"{description}: stopped after {fmt_duration(t.elapsed)}"
            bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
            if self._open == 0:
                bar.stop()
                self._bar = None


def for_console(console: Any, interval: float = 30.0) -> Reporter:
    """Rich bars on a terminal, plain periodic lines otherwise."""
    if getattr(console, "is_terminal", False):
        return RichReporter(console)
    return LineReporter(lambda s: console.print(s, markup=False, highlight=False, soft_wrap=True), interval=interval)


# ------------------------------------------------------------------------------------------- compression layers
@contextlib.contextmanager
def layer_progress(model: Any, task: Task, times: list[float] | None = None) -> Iterator[int]:
    """Advance `task` as llm-compressor's sequential pipeline reaches each decoder layer: a forward pre-hook on every
    decoder layer records the highest layer index entered (layers before it are done). Yields the layer count.
    With `times`, the wall seconds each layer took (first entry of layer i to first entry of layer i + 1, both of
    the pipeline's passes over it included; the last one ends on exit) are appended to it, and the task's note
    shows the last one. The hooks are removed on exit; they change nothing in the computation."""
    layers = _decoder_layers(model)
    if not layers:
        yield 0
        return
    n = len(layers)
    task.set_total(n)
    handles = []
    started: dict[int, float] = {}  # layer index -> when the pipeline first entered it

    def make(i: int):
        def hook(module: Any, args: Any) -> None:
            if i not in started:
                started[i] = time.monotonic()
                if i - 1 in started and times is not None:
                    times.append(started[i] - started[i - 1])
            if i > task.completed:
                task.completed = float(i)  # layers 0..i-1 are done
            last = f", last {times[-1]:.1f} s/layer" if times else ""
            label = f"layer {i + 1}/{n}{last}"
            if task.extra != label and i >= task.completed:
                task.note(label)

        return hook

    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(make(i)))
    try:
        yield n
        if times is not None and n - 1 in started:
            times.append(time.monotonic() - started[n - 1])  # the last layer ends with the pipeline
        task.update(n)
    finally:
        for h in handles:
            h.remove()


def per_layer_summary(times: list[float]) -> dict[str, Any]:
    """Seconds per decoder layer as `layer_progress(times=...)` recorded them: count, mean, min, max, each layer."""
    if not times:
        return {}
    return {"layers": len(times), "mean_s": round(sum(times) / len(times), 2), "min_s": round(min(times), 2),
            "max_s": round(max(times), 2), "each_s": [round(t, 2) for t in times]}  # fmt: skip


def _decoder_layers(model: Any) -> list[Any]:
    import torch

    for owner in (getattr(model, "model", None), getattr(getattr(model, "model", None), "language_model", None),
                  getattr(model, "transformer", None)):  # fmt: skip
        layers = getattr(owner, "layers", None) or getattr(owner, "h", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers):
            return list(layers)
    return []
