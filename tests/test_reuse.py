"""One reuse rule (issue 17): a stored logits artifact is judged the same way by the run (score_cells: reuse it or
refuse to overwrite it), by the run's preflight (artifact_conflict) and by the sweep (driver._artifact_ok), on every
kind of difference and device. All three ask cpbench.run.outputs.reuse_check; this test fails if one of them
grows a rule of its own again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cpbench.backends.hf import HFBackend
from cpbench.base.errors import CpbenchError
from cpbench.base.runkey import AnalysisKey, ScoreKey
from cpbench.results.artifact import LogitsArtifact
from cpbench.run.cells import artifact_path, score_cells
from cpbench.run.outputs import artifact_conflict, reuse_check, same_device_type
from cpbench.sweep import driver

KEY = ScoreKey(model="tiny", task="qa", data="samples")
P_HASH = "prompts-hash-1"


def _wid(dev_type: str) -> str:
    """The weights id a unit's artifacts carry on a device type (fp32 on CPU, bf16 on GPU: other ids)."""
    return f"weights-{'cuda' if dev_type == 'cuda' else 'cpu'}"


def _save(path: Path, **prov) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 8)
    logits = rng.normal(0, 1, (8, 4)).astype(np.float32)
    base = {"run_key": KEY.model_dump(), "prompts_hash": P_HASH, "weights_id": _wid("cpu"), "device": "cpu"}
    LogitsArtifact(ids=[f"q{i}" for i in range(8)], labels=labels, logits=logits, letters=list("ABCD"),
                   provenance={**base, **prov}).save(path)  # fmt: skip


STORED = {  # what is at the cell's artifact path
    "absent": None,
    "same, cpu": {},
    "same, cuda:1": {"device": "cuda:1", "weights_id": _wid("cuda")},
    "cpu weights id, scored on cuda": {"device": "cuda:0"},
    "other items": {"prompts_hash": "prompts-hash-2"},
    "other weights": {"weights_id": "weights-other"},
    "other run key": {"run_key": KEY.model_copy(update={"shots": 1}).model_dump()},
    "damaged": "garbage",
}


class _Load(Exception):
    """score_cells wanted to load the model: it would score the cell."""


def _run_judges(results: Path, device: str) -> str:
    """What `cpbench run` on `device` does with the stored artifact: reuse, refuse (overwrite) or score."""

    def load():
        raise _Load

    opts = SimpleNamespace(analysis=AnalysisKey(), scorer="hf", limit=None)
    inputs = {(KEY.task, KEY.prompt): SimpleNamespace(prompts_hash=P_HASH, prompts=[], data_source={})}
    try:
        (cell,) = score_cells("t", [KEY], _wid(device.split(":")[0]), load, {}, opts, inputs, device, results,
                              backend=HFBackend(), echo=lambda _: None, progress=False, analyze=False)  # fmt: skip
    except _Load:
        return "score"
    except CpbenchError as exc:
        assert "--force would replace it" in str(exc)
        return "refuse"
    assert cell.reused
    return "reuse"


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0"])
@pytest.mark.parametrize("stored", list(STORED))
def test_run_preflight_and_sweep_judge_one_artifact_alike(tmp_path, monkeypatch, stored, device):
    import cpbench.run.unit as unit_mod

    monkeypatch.setattr(unit_mod, "unit_identity", lambda unit, dev: SimpleNamespace(weights_id=_wid(dev)))
    results = tmp_path / "results"
    path = artifact_path(results, KEY)
    path.parent.mkdir(parents=True)
    if STORED[stored] == "garbage":
        path.write_bytes(b"not parquet")
    elif STORED[stored] is not None:
        _save(path, **STORED[stored])

    run = _run_judges(results, device)
    conflict = artifact_conflict(path, KEY, P_HASH, _wid(device.split(":")[0]), device)
    sweep = driver._artifact_ok(path, KEY, P_HASH, SimpleNamespace(uid="u1"), device, {})
    art, why = reuse_check(path, KEY, P_HASH, _wid(device.split(":")[0]), device)

    assert run == ("reuse" if art is not None else "refuse" if why else "score")
    assert conflict == why
    assert (sweep is not None) == (art is not None)
    dev_type = device.split(":")[0]
    expected_reuse = stored == "same, cpu" and dev_type == "cpu" or stored == "same, cuda:1" and dev_type == "cuda"
    assert (art is not None) == expected_reuse, (stored, device, why)


def test_auto_device_accepts_any_device_type_with_its_own_weights_id(tmp_path, monkeypatch):
    """The sweep's device "auto" (and None) takes an artifact from either device type, as long as its weights id is
    the one predicted for the device type it was scored on."""
    import cpbench.run.unit as unit_mod

    monkeypatch.setattr(unit_mod, "unit_identity", lambda unit, dev: SimpleNamespace(weights_id=_wid(dev)))
    unit = SimpleNamespace(uid="u1")
    for prov, ok in (({}, True), ({"device": "cuda:1", "weights_id": _wid("cuda")}, True),
                     ({"device": "cuda:0"}, False)):  # fmt: skip
        path = tmp_path / f"{len(prov)}-{ok}.parquet"
        _save(path, **prov)
        assert (driver._artifact_ok(path, KEY, P_HASH, unit, "auto", {}) is not None) is ok
        assert (reuse_check(path, KEY, P_HASH, _wid, None)[0] is not None) is ok
    assert same_device_type("cuda:3", None) and same_device_type("cpu", "auto")
    assert same_device_type("cuda:3", "cuda") and not same_device_type("cpu", "cuda:0")


def test_a_conflict_names_the_first_difference(tmp_path):
    path = tmp_path / "a.parquet"
    assert reuse_check(path, KEY, P_HASH, _wid("cpu"), "cpu") == (None, None)
    _save(path, device="cuda:0", weights_id="weights-other")
    assert reuse_check(path, KEY, P_HASH, _wid("cpu"), "cpu")[1].startswith("other weights: weights-other")
    _save(path, device="cuda:0")
    assert reuse_check(path, KEY, P_HASH, _wid("cpu"), "cpu")[1] == "scored on cuda:0, this run uses cpu"
    path.write_bytes(b"x")
    assert reuse_check(path, KEY, P_HASH, _wid("cpu"), "cpu")[1].startswith("unreadable (")
