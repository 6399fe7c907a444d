"""Task definitions: the five shipped YAML files, and one-line errors for malformed ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cpbench.base.errors import CpbenchError
from cpbench.base.paths import data_dir
from cpbench.specs.tasks import list_tasks, load_task, load_task_file

TASKS = data_dir("tasks")


def test_the_five_tasks_in_ye_order():
    assert list_tasks() == ["qa", "rc", "ci", "drs", "ds"]


@pytest.mark.parametrize("name", ["qa", "rc", "ci", "drs", "ds"])
def test_shipped_task_loads(name):
    spec = load_task(name)
    assert spec.name == name and spec.path == str(TASKS / f"{name}.yaml")
    assert spec.count == 10_000
    assert [str(i) for i in spec.demonstrations.exclude_from_evaluation] == ["1", "3", "5", "7", "9"]
    assert spec.prepared.repo == "ErikYip/LLM-Uncertainty-Bench"


def test_demonstration_ids_follow_ye_et_al():
    ids = {name: load_task(name).demonstrations.ids for name in list_tasks()}
    assert ids == {"qa": [1, 3, 5, 7, 9], "rc": [1, 3, 5, 7, 9], "ci": [1, 3, 5, 7, 9], "drs": [5, 7, 9], "ds": [9]}


def test_sources_and_headers():
    expect = {  # task: (prepared file, original dataset, config, context header)
        "qa": ("mmlu_10k.json", "cais/mmlu", "all", None),
        "rc": ("cosmosqa_10k.json", "allenai/cosmos_qa", None, "Context"),
        "ci": ("hellaswag_10k.json", "Rowan/hellaswag", None, "Context"),
        "drs": ("halu_dialogue.json", "pminervini/HaluEval", "dialogue", "Dialogue"),
        "ds": ("halu_summarization.json", "pminervini/HaluEval", "summarization", "Document"),
    }
    for name, (file, path, config, label) in expect.items():
        spec = load_task(name)
        assert (spec.prepared.file, spec.original.path, spec.original.config, spec.context_label) == \
            (file, path, config, label)


def test_shared_instruction_is_the_same_for_every_task():
    specs = [load_task(n) for n in list_tasks()]
    assert len({s.prompts.shared for s in specs}) == 1
    assert len({s.prompts.closing for s in specs}) == 1
    assert len({s.prompts.task.zero_shot for s in specs}) == 5  # task instructions differ


# ----------------------------------------------------------------------------------------------- malformed files


def _write(tmp_path: Path, name: str, mutate) -> Path:
    raw = yaml.safe_load((TASKS / "qa.yaml").read_text())
    raw["name"] = name
    mutate(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _error(path: Path) -> str:
    with pytest.raises(CpbenchError) as exc:
        load_task_file(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_copy_of_a_shipped_file_is_valid(tmp_path):
    spec = load_task_file(_write(tmp_path, "copy", lambda raw: None))
    assert spec.name == "copy" and spec.prompts == load_task("qa").prompts


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nprompts: [unclosed\n")
    msg = _error(path)
    assert "malformed YAML" in msg and "line" in msg


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "mapping" in _error(path)


def test_unknown_key_did_you_mean_at_top_level(tmp_path):
    msg = _error(_write(tmp_path, "t1", lambda raw: raw.__setitem__("sead", 3)))
    assert "unknown key 'sead'" in msg and "did you mean 'seed'" in msg


def test_unknown_key_did_you_mean_nested(tmp_path):
    def mutate(raw):
        raw["prompts"]["shared"]["zero_shots"] = raw["prompts"]["shared"].pop("zero_shot")

    msg = _error(_write(tmp_path, "t2", mutate))
    assert "prompts.shared.zero_shots" in msg and "did you mean 'zero_shot'" in msg


def test_missing_field_mapping(tmp_path):
    msg = _error(_write(tmp_path, "t3", lambda raw: raw["original"]["fields"].pop("label")))
    assert "original" in msg and "fields.label" in msg and "required" in msg


def test_halueval_needs_right_and_hallucinated(tmp_path):
    def mutate(raw):
        raw["original"]["kind"] = "halueval"
        raw["original"]["fields"] = {"context": "document", "right": "right_summary"}
        raw["original"]["question_text"] = "Which?"

    msg = _error(_write(tmp_path, "t4", mutate))
    assert "fields.hallucinated" in msg


def test_missing_required_field(tmp_path):
    msg = _error(_write(tmp_path, "t5", lambda raw: raw.pop("demonstrations")))
    assert "'demonstrations' is required" in msg


def test_demonstrations_must_be_excluded_from_evaluation(tmp_path):
    msg = _error(_write(tmp_path, "t6", lambda raw: raw["demonstrations"].__setitem__("ids", [1, 2])))
    assert "demonstrations" in msg and "[2]" in msg


def test_instruction_with_outer_whitespace_is_rejected(tmp_path):
    msg = _error(_write(tmp_path, "t7", lambda raw: raw["prompts"].__setitem__("closing", "Answer now.\n")))
    assert "prompts.closing" in msg


def test_bad_regex(tmp_path):
    msg = _error(_write(tmp_path, "t8", lambda raw: raw["original"].__setitem__("exclude_options_matching", "(")))
    assert "exclude_options_matching" in msg and "regex" in msg


def test_name_must_match_file(tmp_path):
    path = _write(tmp_path, "t9", lambda raw: None)
    path.rename(tmp_path / "other.yaml")
    assert "does not match the file name" in _error(tmp_path / "other.yaml")


def test_unknown_task_did_you_mean():
    with pytest.raises(CpbenchError, match="did you mean 'drs'"):
        load_task("drss")


def test_list_tasks_skips_underscore_files(tmp_path):
    for name in ("zz", "qa", "_shared", "ds"):
        (tmp_path / f"{name}.yaml").write_text("{}")
    assert list_tasks(tmp_path) == ["qa", "ds", "zz"]
