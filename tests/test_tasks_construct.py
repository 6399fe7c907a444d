"""Building the six-option items from the original datasets' own schemas.

The hub is unreachable here, so each test writes a small dataset in the original's schema and layout (Parquet with a
README `configs:` block like cais/mmlu and pminervini/HaluEval, split-named JSONL like the CosmosQA / HellaSwag
exports) and loads it through the same `datasets.load_dataset` call the hub path uses.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbench.base.errors import CpbenchError
from cpbench.specs.tasks import LETTERS, load_items, load_original, load_task
from cpbench.specs.tasks.construct import clean_hellaswag, construct_items

FIXED = {"E": "I don't know", "F": "None of the above"}


# ----------------------------------------------------------------------------------------------- source writers


def _write_readme(root: Path, configs: dict[str, dict[str, str]]) -> None:
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, path in splits.items():
            lines += [f"  - split: {split}", f"    path: {path}"]
    lines.append("---")
    (root / "README.md").write_text("\n".join(lines) + "\n")


def write_mmlu(root: Path, n: int = 60) -> list[dict]:
    """cais/mmlu layout: config `all`, Parquet, columns question, subject, choices (list), answer (int)."""
    rows = [{"question": f"Question number {i}?", "subject": ["anatomy", "virology", "law"][i % 3],
             "choices": [f"opt {i} {k}" for k in "wxyz"], "answer": (i * 7) % 4} for i in range(n)]
    rows.append({"question": "Dup?", "subject": "law", "choices": ["same", "same", "x", "y"], "answer": 0})
    rows.append({"question": "Nota?", "subject": "law", "choices": ["p", "q", "r", "None of the above"], "answer": 3})
    (root / "all").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "all" / "test-00000-of-00001.parquet")
    _write_readme(root, {"all": {"test": "all/test-*.parquet"}})
    return rows


def write_cosmos(root: Path, n_train: int = 40, n_val: int = 12) -> dict[str, list[dict]]:
    """allenai/cosmos_qa schema: id, context, question, answer0..answer3, label (int; -1 in test)."""
    root.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("validation", n_val), ("test", 5)):
        rows = []
        for i in range(n):
            row = {"id": f"{split}-{i}", "context": f"{split} story {i}.\nIt was a long day.",
                   "question": f"Why {i}?", "label": -1 if split == "test" else (i * 3 + 1) % 4}
            for k in range(4):
                row[f"answer{k}"] = f"{split} reason {i}-{k}"
            rows.append(row)
        if split == "train":  # CosmosQA really has such options; they collide with option F
            rows.append({"id": "nota", "context": "c", "question": "q", "answer0": "a", "answer1": "b",
                         "answer2": "None of the above choices .", "answer3": "d", "label": 2})
        out[split] = rows
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def write_hellaswag(root: Path, n_train: int = 30, n_val: int = 30) -> dict[str, list[dict]]:
    """Rowan/hellaswag schema: ctx, endings (list), label as a string ("" in test), plus metadata columns."""
    root.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("validation", n_val), ("test", 4)):
        rows = []
        for i in range(n):
            ctx = f"[header] How to do thing {i} [title] Start here. [step] A person {i} walks and"
            rows.append({"ind": i, "activity_label": f"activity {i % 5}", "ctx_a": "a", "ctx_b": "b", "ctx": ctx,
                         "endings": [f"ending {split} {i} {k} [step] more." for k in range(4)],
                         "source_id": f"src{i}", "split": split, "split_type": "indomain",
                         "label": "" if split == "test" else str((i + 2) % 4)})
        out[split] = rows
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def write_halueval(root: Path, n: int = 50) -> dict[str, list[dict]]:
    """pminervini/HaluEval layout: configs dialogue / summarization, split `data`, Parquet."""
    dialogue = [{"knowledge": f"fact {i}", "dialogue_history": f"[Human]: Tell me about {i}. [Assistant]: Sure. ",
                 "right_response": f"Right reply {i}.", "hallucinated_response": f"Made-up reply {i}."}
                for i in range(n)]
    dialogue.append({"knowledge": "k", "dialogue_history": "[Human]: same?", "right_response": "Same.",
                     "hallucinated_response": "same"})
    summarization = [{"document": f"Document {i} says things.", "right_summary": f"True summary {i}.",
                      "hallucinated_summary": f"False summary {i}."} for i in range(n)]
    for name, rows in (("dialogue", dialogue), ("summarization", summarization)):
        (root / name).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / name / "data-00000-of-00001.parquet")
    _write_readme(root, {"dialogue": {"data": "dialogue/data-*.parquet"},
                         "summarization": {"data": "summarization/data-*.parquet"}})
    return {"dialogue": dialogue, "summarization": summarization}


def _spec(name: str, **update):
    return load_task(name).model_copy(update=update)


def _balanced(letters: dict[str, int], n: int) -> bool:
    return all(abs(letters[k] - n / 4) <= 1 for k in "ABCD") and letters["E"] == letters["F"] == 0


def _check_items(items) -> None:
    assert [it.id for it in items] == list(range(len(items)))
    for it in items:
        assert list(it.choices) == list(LETTERS)
        assert {k: it.choices[k] for k in "EF"} == FIXED
        assert it.answer in "ABCD"


# ----------------------------------------------------------------------------------------------- the five sources


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def test_mmlu_from_original_schema(tmp_path, hf_cache):
    rows = write_mmlu(tmp_path / "mmlu")
    spec = _spec("qa", count=40, seed=3)
    items, report = load_original(spec, original_path=str(tmp_path / "mmlu"), cache_dir=hf_cache)
    _check_items(items)
    assert len(items) == 40 and report.items == 40
    assert report.rows == len(rows) and report.valid == len(rows) - 2
    assert report.dropped == {"duplicate option": 1, "option equals E/F text": 1}
    assert _balanced(report.letters, 40)
    for it in items:  # the gold letter holds the row's right option; the other three are the row's other options
        src = rows[it.meta["row"]]
        assert it.meta["split"] == "test" and it.meta["subject"] == src["subject"]
        assert it.choices[it.answer] == src["choices"][src["answer"]]
        assert sorted(it.choices[k] for k in "ABCD") == sorted(src["choices"])
        assert it.question == src["question"] and it.context == "" and it.source == "MMLU"


def test_cosmosqa_from_original_schema(tmp_path, hf_cache):
    rows = write_cosmos(tmp_path / "cosmos")
    spec = _spec("rc", count=10_000, seed=0)
    items, report = load_original(spec, original_path=str(tmp_path / "cosmos"), cache_dir=hf_cache)
    _check_items(items)
    # count is an upper bound: every valid row of train + validation is used; test (no labels) is not a split here
    assert report.rows == 41 + 12 and len(items) == 52
    assert report.dropped == {"option matches exclude_options_matching": 1}
    assert _balanced(report.letters, 52)
    assert Counter(it.meta["split"] for it in items) == {"train": 40, "validation": 12}
    for it in items:
        src = rows[it.meta["split"]][it.meta["row"]]
        assert it.choices[it.answer] == src[f"answer{src['label']}"]
        assert it.context == src["context"]  # context kept as published (newline included)
        assert it.source == "CosmosQA"


def test_hellaswag_from_original_schema(tmp_path, hf_cache):
    rows = write_hellaswag(tmp_path / "hs")
    spec = _spec("ci", count=50, seed=1)
    items, report = load_original(spec, original_path=str(tmp_path / "hs"), cache_dir=hf_cache)
    _check_items(items)
    assert len(items) == 50 and report.rows == 60 and not report.dropped
    assert _balanced(report.letters, 50)
    for it in items:
        src = rows[it.meta["split"]][it.meta["row"]]
        assert it.choices[it.answer] == clean_hellaswag(src["endings"][int(src["label"])])
        assert "[" not in it.context and "[" not in it.choices["A"]
        assert it.question == spec.original.question_text
        assert it.meta["activity_label"] == src["activity_label"]


@pytest.mark.parametrize("task, config", [("drs", "dialogue"), ("ds", "summarization")])
def test_halueval_from_original_schema(tmp_path, hf_cache, task, config):
    data = write_halueval(tmp_path / "halu")[config]
    spec = _spec(task, count=30, seed=5)
    items, report = load_original(spec, original_path=str(tmp_path / "halu"), cache_dir=hf_cache)
    _check_items(items)
    assert len(items) == 30 and _balanced(report.letters, 30)
    if task == "drs":
        assert report.dropped == {"duplicate option": 1}  # right == hallucinated (up to case and full stop)
    right_key, wrong_key = list(data[0])[-2:]
    texts_by_row = {i: {r[right_key], r[wrong_key]} for i, r in enumerate(data)}
    for it in items:
        src = data[it.meta["row"]]
        assert it.choices[it.answer] == src[right_key]
        content = [it.choices[k] for k in "ABCD"]
        assert src[wrong_key] in content
        others = [t for t in content if t not in (src[right_key], src[wrong_key])]
        assert len(others) == 2  # two responses drawn from other rows
        for t in others:
            rows_with_t = [i for i, s in texts_by_row.items() if t in s]
            assert rows_with_t and it.meta["row"] not in rows_with_t
        assert it.context == src[spec.original.fields.context].strip()


def test_same_seed_same_items_other_seed_other_items(tmp_path, hf_cache):
    write_mmlu(tmp_path / "mmlu")
    path = str(tmp_path / "mmlu")
    a, _ = load_original(_spec("qa", count=30, seed=11), original_path=path, cache_dir=hf_cache)
    b, _ = load_original(_spec("qa", count=30, seed=11), original_path=path, cache_dir=hf_cache)
    c, _ = load_original(_spec("qa", count=30, seed=12), original_path=path, cache_dir=hf_cache)
    assert [x.model_dump() for x in a] == [x.model_dump() for x in b]
    assert [x.model_dump() for x in a] != [x.model_dump() for x in c]


def test_load_items_original_goes_through_the_same_path(tmp_path, hf_cache):
    write_halueval(tmp_path / "halu")
    spec = _spec("ds", count=12, seed=0)
    via_items = load_items(spec, "original", original_path=str(tmp_path / "halu"), cache_dir=hf_cache)
    direct, _ = load_original(spec, original_path=str(tmp_path / "halu"), cache_dir=hf_cache)
    assert via_items == direct


def test_missing_column_is_one_line_naming_the_field_mapping(tmp_path, hf_cache):
    write_mmlu(tmp_path / "mmlu")
    spec = load_task("qa")
    bad = spec.model_copy(update={"original": spec.original.model_copy(
        update={"fields": spec.original.fields.model_copy(update={"label": "gold"})})})
    with pytest.raises(CpbenchError) as exc:
        load_original(bad, original_path=str(tmp_path / "mmlu"), cache_dir=hf_cache)
    msg = str(exc.value)
    assert "\n" not in msg and "gold" in msg and "qa.yaml" in msg


def test_unreachable_original_is_one_line(tmp_path, hf_cache):
    with pytest.raises(CpbenchError) as exc:
        load_original(load_task("qa"), original_path=str(tmp_path / "nowhere"), cache_dir=hf_cache)
    assert "\n" not in str(exc.value) and "cannot load original dataset" in str(exc.value)


# ----------------------------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 120), seed=st.integers(0, 2**31), count=st.integers(1, 150), data=st.data())
def test_construction_properties(n, seed, count, data):
    labels = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    columns = {"question": [f"q{i}" for i in range(n)], "choices": [[f"o{i}.{k}" for k in range(4)] for i in range(n)],
               "answer": labels, "subject": ["s"] * n}
    origin = [("test", i) for i in range(n)]
    spec = _spec("qa", count=count, seed=seed)
    items, report = construct_items(spec, columns, origin)
    m = min(n, count)
    assert len(items) == m == report.items
    assert len({it.meta["row"] for it in items}) == m  # drawn without replacement
    counts = np.array([report.letters[k] for k in "ABCD"])
    assert counts.max() - counts.min() <= 1  # balanced to within one item
    for it in items:
        r = it.meta["row"]
        assert it.choices[it.answer] == f"o{r}.{labels[r]}"
    again, _ = construct_items(spec, columns, origin)
    assert again == items


def test_answer_letters_close_to_uniform_at_benchmark_size():
    n = 10_000
    rng = np.random.default_rng(0)
    columns = {"question": [f"q{i}" for i in range(n)], "choices": [[f"o{i}.{k}" for k in range(4)] for i in range(n)],
               "answer": rng.integers(0, 4, n).tolist(), "subject": ["s"] * n}
    items, report = construct_items(_spec("qa"), columns, [("test", i) for i in range(n)])
    assert report.letters == {"A": 2500, "B": 2500, "C": 2500, "D": 2500, "E": 0, "F": 0}
    # and the letters are not laid out in a pattern: no long runs of one letter
    runs = max(len(list(g)) for _, g in itertools.groupby(it.answer for it in items))
    assert runs < 15


def test_clean_hellaswag():
    assert clean_hellaswag(" [header] How to bake [title] Preheat the oven. [step] Mix  it ") == \
        "How to bake. Preheat the oven. Mix it"
