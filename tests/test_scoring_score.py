"""score_prompts: the artifact it produces (provenance, ids, labels) and the input checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scoring_fixtures import make_prompts, reference_cloze, reference_letter_logits, tiny

from cpbench.results.artifact import LogitsArtifact
from cpbench.base.errors import CpbenchError
from cpbench.base.runkey import ScoreKey
from cpbench.backends.pipeline import score_prompts
from cpbench.specs.tasks import prompts_hash

DESIGN_KEYS = {
    "run_key", "model_id", "model_revision", "model_source", "recipe", "compression_report", "tokenizer",
    "option_token_ids", "dtype", "device", "backend", "scoring", "batch_size", "prompts_hash", "versions",
    "created_at", "sample_data", "notes",
}  # fmt: skip


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_artifact_carries_design_provenance_and_round_trips(tmp_path, scoring):
    model, tok = tiny()
    prompts = make_prompts(7, shots=1)
    key = ScoreKey(model="tiny", task="qa", shots=1, scoring=scoring, data="samples")
    art = score_prompts(model, tok, prompts, key, batch_size=3, resume=False, progress=False,
                        provenance={"model_source": "local", "notes": ["from the caller"]})  # fmt: skip
    prov = art.provenance
    assert DESIGN_KEYS <= set(prov)
    assert prov["run_key"] == key.model_dump() and prov["scoring"] == scoring and prov["backend"] == "transformers"
    assert prov["dtype"] == "float32" and prov["device"] == "cpu" and prov["batch_size"] == 3
    assert prov["prompts_hash"] == prompts_hash(prompts) and prov["sample_data"] is True
    assert prov["notes"][0] == "from the caller"
    assert set(prov["versions"]) == {"python", "torch", "transformers", "llmcompressor", "compressed_tensors",
                                     "cpbench"}  # fmt: skip
    assert art.ids == [p.item_id for p in prompts] and art.labels.tolist() == [p.label for p in prompts]
    assert art.prompt_hashes == [p.hash for p in prompts]
    if scoring == "letter":
        assert prov["option_token_ids"]["form"] == "space"
        ref = reference_letter_logits(model, tok, prompts, prov["option_token_ids"]["ids"])
    else:
        assert prov["option_token_ids"] is None and prov["scoring_detail"]["cloze"]["logit"] == "sum_logprob"
        ref = reference_cloze(model, tok, prompts)
    assert np.abs(art.logits - ref).max() < 1e-4
    path = art.save(tmp_path / "x.parquet")
    back = LogitsArtifact.load(path)
    assert back.provenance == prov and np.array_equal(back.logits, art.logits)


def test_letters_must_agree_and_labels_be_in_range():
    model, tok = tiny()
    prompts = make_prompts(3, shots=0)
    key = ScoreKey(model="tiny", task="qa")
    bad_label = [dataclasses.replace(prompts[0], label=6)] + prompts[1:]
    with pytest.raises(CpbenchError, match="label 6"):
        score_prompts(model, tok, bad_label, key, resume=False, progress=False)
    dup = prompts + [prompts[0]]
    with pytest.raises(CpbenchError, match="duplicate item ids"):
        score_prompts(model, tok, dup, key, resume=False, progress=False)
    with pytest.raises(CpbenchError, match="no prompts"):
        score_prompts(model, tok, [], key, resume=False, progress=False)
