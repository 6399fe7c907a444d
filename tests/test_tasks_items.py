"""Items: schema validation with one-line errors, item files, the offline samples, the prepared files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from cpbench.base.errors import CpbenchError
from cpbench.base.paths import data_dir
from cpbench.specs.tasks import LETTERS, Item, data_tag, list_tasks, load_items, load_task, read_items, write_items
from cpbench.specs.tasks.sources import source_provenance


def record(i=0, **over):
    rec = {"id": i, "source": "MMLU", "context": "", "question": f"What is {i}?",
           "choices": {"A": f"a{i}", "B": f"b{i}", "C": f"c{i}", "D": f"d{i}", "E": "I don't know",
                       "F": "None of the above"}, "answer": "C"}
    rec.update(over)
    return rec


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


def load_error(tmp_path, records) -> str:
    path = write_json(tmp_path / "items.json", records)
    with pytest.raises(CpbenchError) as exc:
        read_items(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


# ----------------------------------------------------------------------------------------------- schema


def test_valid_item_keeps_int_id_and_canonical_letter_order():
    rec = record(7)
    rec["choices"] = dict(reversed(list(rec["choices"].items())))
    item = Item.model_validate(rec)
    assert item.id == 7 and isinstance(item.id, int)
    assert list(item.choices) == list(LETTERS) and item.label == 2


def test_duplicate_option_fails_naming_file_item_and_field(tmp_path):
    bad = record(3)
    bad["choices"]["D"] = "  A3 "  # same as option A up to case and spaces
    msg = load_error(tmp_path, [record(0), bad])
    assert "item 1 (id 3)" in msg and "choices" in msg and "duplicate option" in msg and "A and D" in msg


def test_answer_outside_a_to_f(tmp_path):
    msg = load_error(tmp_path, [record(0, answer="G")])
    assert "item 0" in msg and "answer" in msg and "'G'" in msg


def test_answer_must_be_a_letter_not_an_index(tmp_path):
    assert "answer" in load_error(tmp_path, [record(0, answer=2)])


def test_wrong_fixed_options(tmp_path):
    bad = record(0)
    bad["choices"]["E"] = "Maybe"
    msg = load_error(tmp_path, [bad])
    assert "choices.E" in msg and "I don't know" in msg


def test_fixed_options_compare_up_to_case_and_full_stop():
    rec = record(0)
    rec["choices"]["E"] = "I don't know."
    rec["choices"]["F"] = "none of the above"
    assert Item.model_validate(rec).choices["E"] == "I don't know."  # kept as given


def test_missing_letter(tmp_path):
    bad = record(0)
    del bad["choices"]["F"]
    assert "letters must be exactly A-F" in load_error(tmp_path, [bad])


def test_empty_option(tmp_path):
    bad = record(0)
    bad["choices"]["B"] = "  "
    assert "choices.B" in load_error(tmp_path, [bad])


def test_missing_question_and_unknown_key(tmp_path):
    bad = record(0)
    del bad["question"]
    assert "'question' is required" in load_error(tmp_path, [bad])
    assert "unknown key 'anwser'" in load_error(tmp_path, [record(0, anwser="A")])
    assert "did you mean 'answer'" in load_error(tmp_path, [record(0, anwser="A")])


def test_duplicate_ids(tmp_path):
    msg = load_error(tmp_path, [record(4), record(5), record(4)])
    assert "item 2" in msg and "'id'" in msg and "repeats item 0" in msg


def test_id_type_is_strict(tmp_path):
    assert "id" in load_error(tmp_path, [record(1.5)])


# ----------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_write_read_round_trip(tmp_path, suffix):
    items = [Item.model_validate(record(i, meta={"split": "test", "row": i})) for i in range(6)]
    path = write_items(items, tmp_path / f"items{suffix}", provenance={"task": "qa"})
    assert read_items(path) == items


def test_string_ids_round_trip_through_parquet(tmp_path):
    items = [Item.model_validate(record(f"q-{i}")) for i in range(3)]
    assert read_items(write_items(items, tmp_path / "s.parquet")) == items


def test_json_list_and_jsonl_are_accepted(tmp_path):
    write_json(tmp_path / "plain.json", [record(0), record(1)])
    (tmp_path / "lines.jsonl").write_text(json.dumps(record(0)) + "\n\n" + json.dumps(record(1)) + "\n")
    assert read_items(tmp_path / "plain.json") == read_items(tmp_path / "lines.jsonl")


def test_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.jsonl").write_text(json.dumps(record(0)) + "\n{oops\n")
    latin1 = json.dumps([record(0, question="Caf\u00e9?")], ensure_ascii=False).encode("latin-1")
    (tmp_path / "latin1.json").write_bytes(latin1)
    for name, needle in (("x.csv", "unknown item file type"), ("bad.json", "malformed JSON"),
                         ("bad.jsonl", "line 2"), ("missing.json", "not found"), ("latin1.json", "not a UTF-8")):
        with pytest.raises(CpbenchError, match=needle):
            read_items(tmp_path / name)


def test_load_items_from_local_file_and_limit(tmp_path):
    path = write_json(tmp_path / "mine.json", [record(i) for i in range(12)])
    spec = load_task("qa")
    assert [it.id for it in load_items(spec, str(path), limit=4)] == [0, 1, 2, 3]
    tag = data_tag(str(path))
    assert tag.startswith("file:") and len(tag) == 5 + 12
    assert source_provenance(spec, str(path))["sample_data"] is False
    with pytest.raises(CpbenchError, match="unknown item source"):
        load_items(spec, "prepraed")


# ----------------------------------------------------------------------------------------------- samples


@pytest.mark.parametrize("name", ["qa", "rc", "ci", "drs", "ds"])
def test_samples_are_labelled_balanced_and_cover_the_demonstrations(name):
    spec = load_task(name)
    path = data_dir("tasks") / spec.samples
    raw = json.loads(path.read_text())
    assert raw["sample_data"] is True and "SMOKE-TEST DATA, NOT BENCHMARK DATA" in raw["description"]
    items = load_items(spec, "samples")
    assert len(items) >= 30
    counts = Counter(it.answer for it in items)
    assert set(counts) == set("ABCD") and max(counts.values()) - min(counts.values()) <= 1  # E/F never the answer
    ids = {it.id for it in items}
    assert {1, 3, 5, 7, 9} <= ids
    assert all(it.source == "cpbench-samples" for it in items)
    if spec.context_label is None:
        assert all(it.context == "" for it in items)
    else:
        assert all(it.context for it in items)
    assert source_provenance(spec, "samples") == {"task": name, "data": "samples", "sample_data": True}


def test_samples_readme_says_smoke_test():
    text = (data_dir("tasks") / "samples" / "README.md").read_text()
    assert "smoke-test" in text.lower() and "not benchmark data" in text.lower()


def test_samples_are_distinct_across_tasks():
    questions = [it.question + it.context for n in list_tasks() for it in load_items(load_task(n), "samples")]
    assert len(set(questions)) == len(questions)


# ----------------------------------------------------------------------------------------------- prepared files


def test_prepared_file_used_as_it_is(tmp_path, monkeypatch):
    """Ye et al.'s layout: a JSON list, int ids equal to positions, extra keys kept in meta."""
    records = [record(i, source="MMLU", subject="anatomy") for i in range(10)]
    write_json(tmp_path / "mmlu_10k.json", records)
    calls = []

    def fake_download(repo_id, filename, repo_type=None, revision=None, cache_dir=None):
        calls.append((repo_id, filename, repo_type, revision))
        return str(tmp_path / filename)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    items = load_items(load_task("qa"), "prepared")
    assert calls == [("ErikYip/LLM-Uncertainty-Bench", "mmlu_10k.json", "dataset", None)]
    assert [it.id for it in items] == list(range(10)) and items[3].meta == {"subject": "anatomy"}
    assert items[3].choices == records[3]["choices"] and items[3].answer == "C"


def test_prepared_offline_is_one_line(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nsecond line")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(CpbenchError) as exc:
        load_items(load_task("rc"), "prepared")
    msg = str(exc.value)
    assert "\n" not in msg and "cosmosqa_10k.json" in msg and "--data" in msg


def test_prepared_file_with_bad_item_names_the_file(tmp_path, monkeypatch):
    records = [record(i) for i in range(3)] + [record(3, answer="Z")]
    write_json(tmp_path / "hellaswag_10k.json", records)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: str(tmp_path / kw["filename"]))
    with pytest.raises(CpbenchError, match=r"ErikYip/LLM-Uncertainty-Bench/hellaswag_10k.json: item 3 \(id 3\)"):
        load_items(load_task("ci"), "prepared")
