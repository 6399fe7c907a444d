"""Disk problems during atomic writes (ENOSPC, EROFS, EACCES): one line naming the path and the problem, exit 2,
no partial or temporary file, an existing file untouched; temporaries of dead writers cleaned on the next write/load."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from result_factory import make_record

from cpbench.base import atomic
from cpbench.base.atomic import atomic_path, clean_stale_temporaries, write_json_atomic, write_text_atomic
from cpbench.cli import main
from cpbench.base.errors import CpbenchError
from cpbench.results.store import load_results, write_result


def _files(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "code, words", [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system"),
                    (errno.EACCES, "permission denied"), (errno.EDQUOT, "disk quota exceeded")],
)
@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_disk_errors_are_one_line_and_leave_nothing(tmp_path: Path, monkeypatch, code: int, words: str,
                                                    stage: str) -> None:
    target = tmp_path / "out" / "record.json"
    target.parent.mkdir()
    target.write_text("previous content\n")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if stage == "fsync":
        monkeypatch.setattr(atomic.os, "fsync", fail)
    elif stage == "replace":
        monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(CpbenchError) as err:
        with atomic_path(target) as tmp:
            if stage == "write":
                fail()
            tmp.write_text("new")
    msg = str(err.value)
    assert "\n" not in msg and str(target) in msg and words in msg
    assert target.read_text() == "previous content\n"  # the finished file is not lost
    assert _files(tmp_path) == ["out/record.json"]  # no temporary left


def test_unrelated_errors_in_the_block_are_not_disguised(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x.json"):
            raise KeyError("a bug, not a disk problem")
    assert _files(tmp_path) == []


def test_pyarrow_style_error_without_errno_is_recognised(tmp_path: Path, monkeypatch) -> None:
    """pyarrow raises OSError('... [Errno 28] No space left on device') with errno None."""
    import pyarrow.parquet as pq

    import numpy as np

    from cpbench.results.artifact import LogitsArtifact

    def full(*args, **kwargs):
        raise OSError("Failed to write: [Errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(CpbenchError, match="no space left on device"):
        LogitsArtifact(ids=["a", "b"], labels=np.array([0, 1]), logits=np.zeros((2, 6), np.float32),
                       letters=list("ABCDEF")).save(tmp_path / "a.parquet")
    assert _files(tmp_path) == []


def test_cannot_create_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CpbenchError, match="cannot write here"):
        write_text_atomic(tmp_path / "file" / "sub" / "a.txt", "x")


# ------------------------------------------------------------------------------- real file systems (root only)
@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 64 KiB tmpfs (needs root and mount permission; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_for_real(tiny_fs: Path, capsys) -> None:
    with open(tiny_fs / "filler", "wb", buffering=0) as fh:  # fill the file system completely
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    with pytest.raises(CpbenchError, match="no space left on device"):
        write_result(make_record(), tiny_fs / "results")
    assert [p.name for p in tiny_fs.rglob("*") if p.is_file()] == ["filler"]
    # through the CLI: `check --summary` onto the full disk is exit 2, one line
    write_result(make_record(), tiny_fs.parent / "base")
    write_result(make_record(recipe="q"), tiny_fs.parent / "cand")
    rc = main(["check", "-b", str(tiny_fs.parent / "base"), "-c", str(tiny_fs.parent / "cand"),
               "--summary", str(tiny_fs / "summary.md"), "--max-set-size-increase", "0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no space left on device" in err[0] and "summary.md" in err[0]


def test_read_only_file_system_for_real(tiny_fs: Path) -> None:
    write_result(make_record(), tiny_fs / "results")
    before = _files(tiny_fs)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(CpbenchError, match="read-only file system"):
        write_result(make_record(task="rc"), tiny_fs / "results")
    df, skipped = load_results(tiny_fs / "results")  # reading a read-only tree still works
    assert len(df) == 2 and skipped == [] and _files(tiny_fs) == before


# ------------------------------------------------------------------------------- leftovers of interrupted writes
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _tmp_name(target: str, pid: int, host: str | None = None) -> str:
    return f".{target}.{host or atomic._host()}.{pid}-deadbeef{atomic.TMP_SUFFIX}"


def test_temporaries_of_dead_writers_are_removed_on_load_and_write(tmp_path: Path) -> None:
    path = write_result(make_record(), tmp_path)
    d = path.parent
    dead = d / _tmp_name(path.name, _dead_pid())
    dead.write_text("{")  # a write killed half-way
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = d / _tmp_name("other.json", sleeper.pid)
        live.write_text("{")  # another process is writing right now
        foreign = d / _tmp_name("x.json", 1, host="otherhost")
        foreign.write_text("{")  # another machine's write on a shared file system: its pid means nothing here
        legacy_old, legacy_new = d / ".a.json.abc123.tmp", d / ".b.json.def456.tmp"
        legacy_old.write_text("{")
        legacy_new.write_text("{")
        old = time.time() - 2 * atomic.LEGACY_TMP_AGE_S
        os.utime(legacy_old, (old, old))
        df, skipped = load_results(tmp_path)
        assert len(df) == 2 and skipped == []  # never reported: no warning that repeats forever
        assert not dead.exists() and not legacy_old.exists()
        assert live.exists() and foreign.exists() and legacy_new.exists()
        # a write into the directory also cleans (only this module's pid-named temporaries)
        sleeper.kill()
        sleeper.wait()
        write_result(make_record(task="rc"), tmp_path)
        assert not live.exists() and legacy_new.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_own_temporary_has_pid_and_host_in_its_name(tmp_path: Path) -> None:
    seen = []
    with atomic_path(tmp_path / "a.json") as tmp:
        seen.append(tmp.name)
        assert atomic.is_temporary(tmp) and not atomic.stale(tmp)  # our own, in progress
        assert clean_stale_temporaries(tmp_path) == []
        tmp.write_text("{}")
    assert f".{os.getpid()}-" in seen[0] and atomic._host() in seen[0]
    assert _files(tmp_path) == ["a.json"]


def test_json_is_serialised_before_any_file_exists(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "a.json", {"x": float("nan")})
    assert _files(tmp_path) == []
    assert json.loads(json.dumps({"ok": 1}))


def test_writer_killed_mid_write_leaves_a_temporary_that_the_next_load_removes(tmp_path: Path) -> None:
    """A real SIGKILL inside the atomic block: no record appears, the half-written temporary is cleaned next time."""
    import signal

    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys, time\n"
        "from cpbench.base.atomic import atomic_path\n"
        f"with atomic_path({str(tmp_path / 'tiny' / 'base' / 'r.json')!r}) as tmp:\n"
        "    tmp.write_text('{\"schema\": \"cpbench.res')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "writing"
        left = list((tmp_path / "tiny" / "base").iterdir())
        assert len(left) == 1 and atomic.is_temporary(left[0]) and not atomic.stale(left[0])  # owner alive
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    assert atomic.stale(left[0])
    path = write_result(make_record(task="rc"), tmp_path)  # the next write in that directory cleans it
    assert not left[0].exists() and _files(tmp_path) == [f"tiny/base/{path.name}"]
    df, skipped = load_results(tmp_path)
    assert len(df) == 2 and skipped == []
