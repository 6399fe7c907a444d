"""Issue 18 (reliability): FIFO / device `--data`, oversized items and prompts longer than the model's context,
`--model-args` keys and remote code, SIGTERM, the bare install. Bad input is one line and exit 2, before any
expensive step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpbench.cli import main
from cpbench.errors import CpbenchError
from run_fixtures import cache, tiny_dir  # noqa: F401  (pytest fixtures)

ROOT = Path(__file__).resolve().parents[1]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("cpbench: error: "), lines[0]
    return lines[0]


def _items(n: int = 32) -> list[dict]:
    return json.loads((ROOT / "tasks" / "samples" / "qa.json").read_text())["items"][:n]


# ------------------------------------------------------------------------------------- 1. FIFO and device --data
def _watchdog(seconds: int):
    """A hang (the bug) fails the test instead of blocking the suite: SIGALRM raises in the main thread."""

    def boom(*_):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    return old


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_data_from_a_fifo_or_device_is_refused_without_reading(tmp_path, capsys, kind):
    if kind == "fifo":
        path = tmp_path / "items.json"
        os.mkfifo(path)  # nobody writes: hashing or reading it would block forever
    else:
        path = Path("/dev/zero")  # reading it never ends
    old = _watchdog(60)
    try:
        assert main(["run", "--model", "smollm2-135m-instruct@pypi", "--tasks", "qa", "--data", str(path)]) == 2
        line = _err_line(capsys)
        assert str(path) in line and ("FIFO" in line if kind == "fifo" else "device" in line)
        assert main(["tasks", "show", "qa", "--data", str(path)]) == 2
        assert "not an item file" in _err_line(capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_data_tag_refuses_fifo_before_hashing(tmp_path):
    from cpbench.tasks import data_tag

    os.mkfifo(tmp_path / "p.jsonl")
    with pytest.raises(CpbenchError, match="FIFO"):
        data_tag(tmp_path / "p.jsonl")


# --------------------------------------------------------------------------------- 2. oversized items and prompts
def test_an_item_of_10_mb_is_refused_at_load(tmp_path, capsys):
    items = _items()
    items[3]["context"] = "x" * 10_000_000
    f = tmp_path / "big.json"
    f.write_text(json.dumps(items))
    assert main(["tasks", "show", "qa", "--data", str(f)]) == 2
    line = _err_line(capsys)
    assert "item 3" in line and "10,000,0" in line and "cap" in line and len(line) < 300


def test_item_file_size_cap(tmp_path, monkeypatch):
    from cpbench.tasks import itemfile

    f = tmp_path / "items.json"
    f.write_text(json.dumps(_items()))
    monkeypatch.setattr(itemfile, "MAX_ITEM_FILE_BYTES", 100)
    with pytest.raises(CpbenchError, match="cap on item files"):
        itemfile.read_items(f)


def test_a_prompt_longer_than_the_context_fails_before_scoring(tmp_path, capsys, cache, tiny_dir):
    from cpbench.tasks import load_task

    items = _items()
    demos = {str(i) for i in load_task("qa").demonstrations.ids}
    long = next(it for it in items if str(it["id"]) not in demos)
    long["question"] = " ".join(["water light river"] * 1500)  # ~4,500 words: over the tiny model's 1,024
    f = tmp_path / "long.json"
    f.write_text(json.dumps(items))
    rc = main(["run", "--model", tiny_dir, "--tasks", "qa", "--data", str(f), "--device", "cpu",
               "--results", str(tmp_path / "r")])  # fmt: skip
    assert rc == 2
    line = _err_line(capsys)
    assert f"item {str(long['id'])!r}" in line and "1,024" in line and "max_position_embeddings" in line
    assert not list((tmp_path / "r").rglob("*.parquet"))  # nothing scored


def test_context_limit_sources():
    from cpbench.failfast import context_limit

    class Tok:
        model_max_length = 2048

    assert context_limit({"max_position_embeddings": 8192}) == (8192, "max_position_embeddings")
    assert context_limit({"n_positions": 1024}) == (1024, "n_positions")
    assert context_limit({}, Tok()) == (2048, "tokenizer model_max_length")
    Tok.model_max_length = int(1e30)
    assert context_limit({}, Tok()) is None
