"""cpbench.base.locks: cross-process exclusion, holders named on timeout, dead holders recovered, staged directories
committed with a marker written last and trusted only with it, leftovers of dead processes swept (live ones never)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cpbench.base import locks
from cpbench.base.errors import CpbenchError

REPO = Path(__file__).resolve().parents[1]


def _child(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


HOLD = """
import sys, time
from pathlib import Path
from cpbench.base.locks import file_lock
with file_lock(sys.argv[1], what="holding for the test"):
    Path(sys.argv[2]).write_text("held")
    time.sleep(float(sys.argv[3]))
"""


def test_second_process_waits_and_timeout_names_the_holder(tmp_path):
    lock, flag = tmp_path / ".x.lock", tmp_path / "held"
    child = _child(HOLD, str(lock), str(flag), "30")
    try:
        _wait_for(flag, child)
        waits: list[str] = []
        t0 = time.monotonic()
        with pytest.raises(locks.LockTimeout) as exc:
            with locks.file_lock(lock, what="the test cell", timeout=0.3, on_wait=waits.append):
                pass
        assert time.monotonic() - t0 >= 0.3
        msg = str(exc.value)
        assert "\n" not in msg and f"pid {child.pid}" in msg and "holding for the test" in msg and "the test cell" in msg
        assert len(waits) == 1 and f"pid {child.pid}" in waits[0]
    finally:
        child.kill()
        child.wait()
    # the holder is dead: the kernel dropped its flock, the lock is free at once
    with locks.file_lock(lock, timeout=0):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # released locks leave no file


def test_waiter_gets_the_lock_when_the_holder_finishes(tmp_path):
    lock, flag = tmp_path / ".y.lock", tmp_path / "held"
    child = _child(HOLD, str(lock), str(flag), "0.5")
    try:
        _wait_for(flag, child)
        with locks.file_lock(lock, timeout=30):
            assert child.wait(timeout=30) == 0  # it released before we got in
    finally:
        child.kill()
        child.wait()


def test_owner_liveness():
    me = locks.current_owner("me")
    assert locks.owner_alive(me) is True
    assert locks.owner_alive(locks.Owner(me.pid, "some-other-host", me.start, me.since, "x")) is None
    if me.start is not None:  # the same pid with another start time is a different (reused-pid) process
        assert locks.owner_alive(locks.Owner(me.pid, me.host, str(int(me.start) + 1), me.since, "x")) is False
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert locks.owner_alive(locks.Owner(proc.pid, me.host, None, me.since, "x")) is False


def _write(d: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)


def test_staged_dir_commits_with_marker_and_trusts_nothing_without_it(tmp_path):
    final = tmp_path / "ckpt"
    with locks.staged_dir(final) as st:
        assert not st.done and st.tmp.is_dir() and st.tmp.name.startswith(".tmp-ckpt.")
        _write(st.tmp, {"model.safetensors": b"w" * 100, "sub/config.json": b"{}"})
        assert not final.exists()
        st.commit()
    assert locks.is_complete(final) and not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob("*.lock"))
    marker = json.loads((final / locks.MARKER).read_text())
    assert marker["files"] == {"model.safetensors": 100, "sub/config.json": 2}
    with locks.staged_dir(final) as st:  # complete: reused, nothing staged
        assert st.done and st.tmp is None

    (final / "model.safetensors").write_bytes(b"w" * 10)  # truncated file
    assert not locks.is_complete(final)
    (final / "model.safetensors").unlink()  # only the rest left (the "checkpoint holding only its report")
    assert not locks.is_complete(final)
    (final / "model.safetensors").write_bytes(b"w" * 100)
    (final / locks.MARKER).write_text("{not json")
    assert not locks.is_complete(final)
    with locks.staged_dir(final) as st:  # an untrusted final directory is rebuilt, not reused
        assert not st.done
        _write(st.tmp, {"a": b"1"})
        st.commit()
    assert sorted(p.name for p in final.iterdir()) == [locks.MARKER, "a"]


def test_staged_dir_is_removed_on_error_and_empty_commit_refused(tmp_path):
    final = tmp_path / "c"
    with pytest.raises(RuntimeError):
        with locks.staged_dir(final) as st:
            _write(st.tmp, {"x": b"1"})
            raise RuntimeError("compression failed")
    assert not list(tmp_path.iterdir())
    with pytest.raises(CpbenchError, match="nothing was written"):
        with locks.staged_dir(final) as st:
            st.commit()
    assert not final.exists()


BUILD = """
import sys, time
from pathlib import Path
from cpbench.base.locks import staged_dir
final, log = Path(sys.argv[1]), Path(sys.argv[2])
with staged_dir(final, what="child build") as st:
    if not st.done:
        with open(log, "a") as fh:
            fh.write(f"built by {__import__('os').getpid()}\\n")
        (st.tmp / "weights.bin").write_bytes(b"x" * 1000)
        time.sleep(float(sys.argv[3]))
        st.commit()
print("complete" if (final / "weights.bin").stat().st_size == 1000 else "broken")
"""


def test_concurrent_builders_build_once_and_both_get_the_result(tmp_path):
    final, log = tmp_path / "ckpt", tmp_path / "log"
    kids = [_child(BUILD, str(final), str(log), "1.0") for _ in range(3)]
    outs = [k.communicate(timeout=120) for k in kids]
    assert all(k.returncode == 0 for k in kids), [o[1][-500:] for o in outs]
    assert [o[0].strip() for o in outs] == ["complete"] * 3
    assert len(log.read_text().splitlines()) == 1  # one build, the others waited and reused it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "log"]  # no staging, no lock files


def test_killed_builder_leftovers_are_swept_but_live_ones_are_not(tmp_path):
    final, log = tmp_path / "ckpt", tmp_path / "log"
    child = _child(BUILD, str(final), str(log), "60")
    try:
        _wait_for(log, child)
        (staging,) = tmp_path.glob(".tmp-ckpt.*")
        owner = locks.read_owner(locks.lock_path(final))  # the holder, written inside the lock file
        assert owner is not None and owner.pid == child.pid and locks.owner_alive(owner)
        assert locks.sweep(tmp_path) == [] and staging.is_dir()  # alive: untouched
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert locks.owner_alive(owner) is False
        assert staging.is_dir() and locks.lock_path(final).exists()  # what a kill leaves
        removed = locks.sweep(tmp_path)
        assert staging in removed and locks.lock_path(final) in removed
        assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]
    finally:
        child.kill()
        child.wait()


def test_next_build_of_the_same_target_removes_a_dead_builders_staging(tmp_path):
    final, log = tmp_path / "ckpt", tmp_path / "log"
    child = _child(BUILD, str(final), str(log), "60")
    try:
        _wait_for(log, child)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        child.kill()
        child.wait()
    with locks.staged_dir(final) as st:
        assert [p for p in tmp_path.glob(".tmp-*")] == [st.tmp]
        _write(st.tmp, {"w": b"1"})
        st.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "log"]


def test_unwritable_lock_directory_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CpbenchError, match="cannot create lock file"):
        with locks.file_lock(blocker / ".a.lock", timeout=0):
            pass


def test_try_acquire_returns_a_held_lock_and_sweep_claims_use_it(tmp_path):
    """The non-blocking primitive (one flock-then-inode protocol): a held handle, the owner written inside, a second
    taker refused, release idempotent and the file gone; the sweep's claims are this primitive (cpbench.sweep.claims)."""
    from cpbench.sweep.claims import Claims

    lock = tmp_path / "sub" / ".c.lock"
    held = locks.try_acquire(lock, what="the claim")
    assert held is not None and held.held and held.owner.what == "the claim"
    assert locks.read_owner(lock).pid == os.getpid()
    assert locks.try_acquire(lock) is None  # another open file description: flock refuses it
    with locks.try_lock(lock) as free:
        assert not free
    held.release()
    held.release()
    assert not held.held and not lock.exists()
    quiet = locks.try_acquire(lock)  # without `what`, nothing is written inside (try_lock)
    assert quiet is not None and quiet.owner is None and lock.read_text() == ""
    quiet.release()

    mine, other = Claims(tmp_path), Claims(tmp_path)
    assert mine.take("u1") and mine.take("u1") and not other.take("u1")
    assert other.holder("u1").startswith(f"pid {os.getpid()} on ")
    mine.release_all()
    assert other.take("u1") and not mine.take("u1")
    other.release("u1")
    assert not mine.path("u1").exists() and other.holder("u1") == ""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CpbenchError, match="cannot claim unit u2: .*cannot create lock file"):
        Claims(blocker).take("u2")
