"""Peak memory and wall time per stage of one process (conversion, load, compression, save, verification, scoring).

```python
with memory.stage("load") as s:
    model = load(...)
s.seconds, s.peak_mb, s.end_mb          # wall time, peak RSS while the stage ran, RSS when it ended
memory.stages()                         # every finished stage of this process, in order (dicts)
```

The peak comes from two sources: the kernel's own high-water mark (`VmHWM` in /proc/self/status), exact whenever a
stage raises the process's peak (the case that decides whether a run fits), and a sampling thread reading RSS every
50 ms while any stage is open, for stages that stay below an earlier peak. The high-water mark is never reset (writing
/proc/self/clear_refs would also lower what `/usr/bin/time -v` reports for the whole process). RSS counts pages
resident in RAM: weights memory-mapped from safetensors files count while they are mapped and touched.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

_MB = 1024 * 1024


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb() -> float:
    """Resident set size of this process now, MB (0 when unknown)."""
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    try:
        import psutil

        return psutil.Process().memory_info().rss / _MB
    except Exception:  # noqa: BLE001 - best effort
        return 0.0


def hwm_mb() -> float | None:
    """The process's peak RSS since start or the last reset, MB (None when the kernel does not say)."""
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    peak_mb: float = 0.0
    start_mb: float = 0.0
    end_mb: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    within: str | None = None  # the stage this one ran inside (None: top level)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["within"] is None:
            del d["within"]
        for k in ("seconds", "peak_mb", "start_mb", "end_mb"):
            d[k] = round(d[k], 2 if k == "seconds" else 1)
        if not d["detail"]:
            del d["detail"]
        return d


_lock = threading.Lock()
_open: list[Stage] = []
_done: list[Stage] = []
_sampler: dict[str, Any] = {"thread": None, "stop": None}


def _fold(peak: float) -> None:
    for s in _open:
        s.peak_mb = max(s.peak_mb, peak)


def _sample_loop(stop: threading.Event) -> None:
    while not stop.wait(0.05):
        now = rss_mb()
        with _lock:
            _fold(now)


def _ensure_sampler() -> None:
    if _sampler["thread"] is not None:
        return
    stop = threading.Event()
    t = threading.Thread(target=_sample_loop, args=(stop,), name="cpbench-rss", daemon=True)
    _sampler.update(thread=t, stop=stop)
    t.start()


def _stop_sampler_if_idle() -> None:
    if not _open and _sampler["thread"] is not None:
        _sampler["stop"].set()
        _sampler["thread"].join(timeout=1.0)
        _sampler.update(thread=None, stop=None)


@contextlib.contextmanager
def stage(name: str, **detail: Any) -> Iterator[Stage]:
    """Measure a stage: wall time, peak RSS while it ran (inner stages included), RSS at start and end. The finished
    stage is appended to `stages()` (also when it raised). `detail` (e.g. recipe=...) is kept with it; the caller
    may add to `Stage.detail` while it runs."""
    with _lock:
        s = Stage(name, start_mb=rss_mb(), detail=dict(detail), within=_open[-1].name if _open else None)
        s.peak_mb = s.start_mb
        hwm_before = hwm_mb()
        _open.append(s)
        _ensure_sampler()
    t0 = time.perf_counter()
    try:
        yield s
    finally:
        s.seconds = time.perf_counter() - t0
        with _lock:
            s.end_mb = rss_mb()
            hwm_after = hwm_mb()
            if hwm_before is not None and hwm_after is not None and hwm_after > hwm_before:
                _fold(hwm_after)  # the process's peak rose during this stage: the kernel's mark is exact
            _fold(s.end_mb)
            _open.remove(s)
            _done.append(s)
            _stop_sampler_if_idle()


def stages() -> list[dict[str, Any]]:
    """Finished stages of this process, in the order they ended."""
    with _lock:
        return [s.as_dict() for s in _done]


def clear() -> None:
    """Forget finished stages (a benchmark between runs)."""
    with _lock:
        _done.clear()


def since(n: int) -> list[dict[str, Any]]:
    """Stages finished after the first `n` (`n = len(stages())` taken before a step)."""
    with _lock:
        return [s.as_dict() for s in _done[n:]]


def release() -> None:
    """Collect garbage (HF models hold reference cycles) and hand freed heap pages back to the OS (glibc's
    `malloc_trim`): tensors below glibc's mmap threshold (up to 32 MB) live on the heap, and after a model is freed
    its pages stay resident in the process until trimmed, counted in RSS as if the model were still there."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def timing_line(done: list[dict[str, Any]], total_s: float | None = None) -> str:
    """One progress line for the stages that made weights ready to score, e.g. `weights ready in 2051.2 s: compress
    2008.9 s (28 layers, 71.7 s/layer), save 20.3 s, verify 9.8 s, scoring load 3.1 s; peak RSS 8.90 GiB`, or `model
    loaded (3.1 s)` when loading was all there was. `done`: the stages finished meanwhile (`since(n)`); nested
    ones (inside another listed stage) are skipped. `total_s`: the caller's own wall time of the whole step."""
    top: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    pending: list[dict[str, Any]] = []  # inner stages end before the stage they ran in
    for s in done:
        if s.get("within"):
            pending.append(s)
        else:
            top.append((s, [c for c in pending if c["within"] == s["name"]]))
            pending = []
    if not top:
        return f"model loaded ({total_s:.1f} s)" if total_s is not None else "model loaded"
    if [s["name"] for s, inner in top] == ["scoring load"] and not top[0][1]:
        return f"model loaded ({top[0][0]['seconds']:.1f} s)"
    parts = []
    for s, inner in top:
        text = f"{s['name']} {s['seconds']:.1f} s"
        d = s.get("detail") or {}
        if d.get("layers"):
            text += f" ({d['layers']} layers, {d['s_per_layer']:.1f} s/layer)"
        if inner:  # e.g. a GGUF conversion inside the first load
            text += " (of which " + ", ".join(f"{c['name']} {c['seconds']:.1f} s" for c in inner) + ")"
        parts.append(text)
    top = [s for s, _ in top]  # type: ignore[misc]
    peak = max(s["peak_mb"] for s in top)  # type: ignore[index]
    head = f"weights ready in {total_s:.1f} s: " if total_s is not None else ""
    return head + ", ".join(parts) + f"; peak RSS {peak / 1024:.2f} GiB"

