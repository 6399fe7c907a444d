"""`cpbench tasks list | show | build`."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from cpbench.cli import main
from cpbench.specs.tasks import build_prompts, load_items, load_task, read_items


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run(capsys, "tasks", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["task", "title", "demos", "samples"]
    assert [line.split()[0] for line in lines[1:]] == ["qa", "rc", "ci", "drs", "ds"]
    assert "5,7,9" in lines[4] and "halu_summarization.json" in lines[5] and " 32 " in lines[1]


def test_show_prints_the_exact_prompt(capsys):
    spec = load_task("rc")
    expected = build_prompts(spec, load_items(spec, "samples"), method="task", shots=3)
    code, out, err = run(capsys, "tasks", "show", "rc", "--item", "4", "--prompt", "task", "--shots", "3")
    assert code == 0
    target = next(p for p in expected if p.item_id == "4")
    assert out == target.text + "\n"
    assert target.hash in err and "item 4" in err


def test_show_defaults_to_first_evaluated_item_zero_shot_base(capsys):
    code, out, _ = run(capsys, "tasks", "show", "qa")
    assert code == 0 and out.startswith("Question: ") and out.endswith("\nAnswer:\n")


def test_show_chat_v1_needs_a_tokenizer(capsys):
    code, _, err = run(capsys, "tasks", "show", "qa", "--chat", "v1")
    assert code == 2 and err.strip().startswith("cpbench: error:") and "tokenizer" in err
    assert len(err.strip().splitlines()) == 1


def test_show_errors_are_one_line(capsys):
    for argv, needle in ((("tasks", "show", "qaa"), "did you mean 'qa'"),
                         (("tasks", "show", "qa", "--item", "3"), "demonstration"),
                         (("tasks", "show", "qa", "--chat", "v9"), "--chat"),
                         (("tasks", "show", "drs", "--shots", "5"), "has 3 demonstrations")):
        code, _, err = run(capsys, *argv)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_build_from_original_prints_the_letter_distribution(tmp_path, capsys, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")  # keep ~/.cache clean
    root = tmp_path / "mmlu"
    (root / "all").mkdir(parents=True)
    rows = [{"question": f"Q{i}?", "subject": "s", "choices": [f"{i}a", f"{i}b", f"{i}c", f"{i}d"], "answer": 0}
            for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), root / "all" / "test.parquet")
    (root / "README.md").write_text("---\nconfigs:\n- config_name: all\n  data_files:\n  - split: test\n"
                                    "    path: all/test.parquet\n---\n")
    out_file = tmp_path / "qa.json"
    code, out, _ = run(capsys, "tasks", "build", "qa", "--from", "original", "--original-path", str(root),
                       "--out", str(out_file), "--count", "20", "--seed", "7")
    assert code == 0
    assert "wrote 20 qa items" in out and "rows read 40, valid 40, dropped none" in out
    assert "answer letters: A 5 (25.0%)  B 5 (25.0%)  C 5 (25.0%)  D 5 (25.0%)  E 0 (0.0%)  F 0 (0.0%)" in out
    saved = json.loads(out_file.read_text())
    prov = saved["provenance"]
    assert prov["original"]["seed"] == 7 and prov["original"]["count"] == 20 and prov["data"] == "original"
    assert prov["build"]["dropped"] == {} and prov["answer_letters"]["A"] == 5
    items = read_items(out_file)
    assert len(items) == 20 and all(it.choices[it.answer].endswith("a") for it in items)


def test_build_from_samples_and_from_a_file(tmp_path, capsys):
    first = tmp_path / "rc.parquet"
    code, out, _ = run(capsys, "tasks", "build", "rc", "--from", "samples", "--out", str(first))
    assert code == 0 and "wrote 32 rc items" in out and "A 8 (25.0%)" in out
    second = tmp_path / "rc.jsonl"
    code, out, _ = run(capsys, "tasks", "build", "rc", "--from", str(first), "--out", str(second))
    assert code == 0
    assert read_items(second) == read_items(first) == load_items(load_task("rc"), "samples")


def test_build_rejects_original_only_options_for_other_sources(tmp_path, capsys):
    code, _, err = run(capsys, "tasks", "build", "qa", "--from", "samples", "--out", str(tmp_path / "x.json"),
                       "--seed", "3")
    assert code == 2 and "--from original only" in err
