"""The ye2024 preset against a transcription of Ye et al.'s reference implementation, and a hand-computed case.

Reference: github.com/smartyfh/LLM-Uncertainty-Bench, file uncertainty_quantification_via_cp.py (commit b17c5e0).
The functions below transcribe its softmax, get_raw_data/get_logits_data (split), LAC_CP, APS_CP, get_accuracy,
cal_acc, cal_coverage, cal_set_size and cal_uacc for one prompt method; the only additions are returned q-hats.
"""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbench.results.conformal.protocols import analyze_artifact, preset
from cpbench.cli import main
from cpbench.results.conformal import SplitConformal, softmax
from cpbench.base.errors import CpbenchError
from cpbench.backends.pickles import import_ye2024

# ------------------------------------------------------------------------------------------ reference (transcribed)
options = ["A", "B", "C", "D", "E", "F"]
ids_to_remove = [1, 3, 5, 7, 9]


def ref_softmax(x):
    e_x = np.exp(x - np.max(x))
    return e_x / e_x.sum()


def ref_split(raw_data, logits_data, cal_ratio):
    from sklearn.model_selection import train_test_split

    raw_data = [item for idx, item in enumerate(raw_data) if idx not in ids_to_remove]
    cal_raw_data, test_raw_data = train_test_split(raw_data, train_size=cal_ratio, random_state=42)
    logits_data = [item for idx, item in enumerate(logits_data) if idx not in ids_to_remove]
    cal_logits_data, test_logits_data = train_test_split(logits_data, train_size=cal_ratio, random_state=42)
    return cal_raw_data, test_raw_data, cal_logits_data, test_logits_data


def ref_lac(cal_logits_data, test_logits_data, cal_raw_data, alpha):
    cal_scores = []
    for idx, row in enumerate(cal_logits_data):
        probs = ref_softmax(row["logits_options"])
        truth_answer = cal_raw_data[idx]["answer"]
        assert cal_raw_data[idx]["id"] == row["id"]
        cal_scores.append(1 - probs[options.index(truth_answer)])
    n = len(cal_logits_data)
    q_level = np.ceil((n + 1) * (1 - alpha)) / n
    qhat = np.quantile(cal_scores, q_level, method="higher")
    pred_sets = {}
    for idx, row in enumerate(test_logits_data):
        probs = ref_softmax(row["logits_options"])
        ps = []
        for ii, p in enumerate(probs):
            if p >= 1 - qhat:
                ps.append(options[ii])
        if len(ps) == 0:
            ps.append(options[np.argmax(probs)])
        pred_sets[str(row["id"])] = ps
    return pred_sets, qhat


def ref_aps(cal_logits_data, test_logits_data, cal_raw_data, alpha):
    cal_scores = []
    for idx, row in enumerate(cal_logits_data):
        probs = ref_softmax(row["logits_options"])
        truth_answer = cal_raw_data[idx]["answer"]
        assert cal_raw_data[idx]["id"] == row["id"]
        cal_pi = np.argsort(probs)[::-1]
        cal_sum = np.take_along_axis(probs, cal_pi, axis=0).cumsum()
        cal_sum_r = np.take_along_axis(cal_sum, cal_pi.argsort(), axis=0)
        cal_score = cal_sum_r[options.index(truth_answer)]
        cal_scores.append(cal_score)
    n = len(cal_logits_data)
    q_level = np.ceil((n + 1) * (1 - alpha)) / n
    qhat = np.quantile(cal_scores, q_level, method="higher")
    pred_sets = {}
    for idx, row in enumerate(test_logits_data):
        probs = ref_softmax(row["logits_options"])
        cal_pi = np.argsort(probs)[::-1]
        cal_sum = np.take_along_axis(probs, cal_pi, axis=0).cumsum()
        ps = []
        ii = 0
        while ii < len(cal_sum) and cal_sum[ii] <= qhat:
            op_id = cal_pi[ii]
            ps.append(options[op_id])
            ii += 1
        if len(ps) == 0:
            op_id = cal_pi[ii]
            ps.append(options[op_id])
        pred_sets[str(row["id"])] = ps
    return pred_sets, qhat


def ref_accuracy(logits_data, raw_data):
    res, preds = [], []
    for idx, row in enumerate(raw_data):
        truth_answer = row["answer"]
        pred = logits_data[idx]
        assert pred["id"] == row["id"]
        pred_answer = options[np.argmax(pred["logits_options"])]
        preds.append(pred_answer)
        res.append(1 if pred_answer == truth_answer else 0)
    return sum(res) / len(res), preds


def ref_all(raw_data, logits_data, alpha=0.1, cal_ratio=0.5) -> dict:
    cal_raw, test_raw, cal_logits, test_logits = ref_split(raw_data, logits_data, cal_ratio)
    acc, preds = ref_accuracy(test_logits, test_raw)
    counts = Counter(preds)
    test_id_to_answer = {str(row["id"]): row["answer"] for row in test_raw}
    out = {"acc": acc, "E_rate": counts["E"] / len(preds), "F_rate": counts["F"] / len(preds)}
    for name, fn in (("lac", ref_lac), ("aps", ref_aps)):
        pred_sets, qhat = fn(cal_logits, test_logits, cal_raw, alpha)
        cover = [1 if test_id_to_answer[k] in v else 0 for k, v in pred_sets.items()]
        sz = [len(v) for v in pred_sets.values()]
        size = sum(sz) / len(sz)
        out[name] = {"coverage": sum(cover) / len(cover), "set_size": size,
                     "uacc": acc * np.sqrt(len(options)) / size, "qhat": qhat, "sets": pred_sets}
    return out


# ---------------------------------------------------------------------------------------------------- helpers
def write_ye_files(tmp_path, logits: np.ndarray, answers: list[str], name="Model-7b_mmlu_10k_base_icl1"):
    rows = [{"id": i, "logits_options": logits[i].astype(np.float32)} for i in range(len(answers))]
    data = [
        {"id": i, "answer": a, "source": "MMLU", "question": f"q{i}", "choices": {o: f"c{o}" for o in options}}
        for i, a in enumerate(answers)
    ]
    pkl, js = tmp_path / f"{name}.pkl", tmp_path / "mmlu_10k.json"
    with open(pkl, "wb") as fh:
        pickle.dump(rows, fh)
    js.write_text(json.dumps(data))
    return pkl, js, rows, data


def random_case(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    if ties:  # small integer logits: many exactly tied probabilities
        logits = rng.integers(-2, 3, size=(n, 6)).astype(np.float32)
    else:
        logits = (rng.normal(size=(n, 6)) * rng.uniform(0.5, 4)).astype(np.float32)
    p = softmax(logits)
    labels = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), 5)
    return logits, [options[j] for j in labels]


# ------------------------------------------------------------------------------------------------------ tests
@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(40, 1500),
    ties=st.booleans(),
    alpha=st.sampled_from([0.1, 0.05, 0.2, 0.3]),
)
def test_ye2024_preset_matches_reference(tmp_path_factory, seed, n, ties, alpha):
    tmp = tmp_path_factory.mktemp("ye")
    logits, answers = random_case(seed, n, ties)
    pkl, js, rows, data = write_ye_files(tmp, logits, answers)
    n_cal = math.floor(0.5 * (n - 5))
    if math.ceil((n_cal + 1) * (1 - alpha)) > n_cal:
        with pytest.raises(CpbenchError, match="too few"):
            analyze_artifact(import_ye2024(pkl, js), preset("ye2024", alpha=alpha))
        return
    ref = ref_all(data, rows, alpha)
    rec = analyze_artifact(import_ye2024(pkl, js), preset("ye2024", alpha=alpha))
    assert rec["n"] == n - 5 and rec["n_cal"] == n_cal
    for ours, theirs in [(rec["acc"], ref["acc"]), (rec["calibration"]["idk_rate"], ref["E_rate"]),
                         (rec["calibration"]["nota_rate"], ref["F_rate"])]:
        assert round(ours, 4) == round(theirs, 4) and abs(ours - theirs) < 1e-12
    for s in ("lac", "aps"):
        for key in ("coverage", "set_size", "uacc"):
            assert round(rec[s][key], 4) == round(ref[s][key], 4), (s, key)
            assert abs(rec[s][key] - ref[s][key]) < 1e-12, (s, key)
        assert rec[s]["qhat"] == float(ref[s]["qhat"])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 100_000), ties=st.booleans())
def test_ye2024_sets_match_reference_item_by_item(tmp_path_factory, seed, ties):
    from cpbench.results.conformal.splits import sklearn_split

    tmp = tmp_path_factory.mktemp("ye")
    logits, answers = random_case(seed, 400, ties)
    _, _, rows, data = write_ye_files(tmp, logits, answers)
    ref = ref_all(data, rows, 0.1)
    keep = np.array([i not in ids_to_remove for i in range(400)])
    kept_ids = np.arange(400)[keep]
    probs = softmax(logits[keep], np.float32)
    y = np.array([options.index(a) for a in answers])[keep]
    cal, test = sklearn_split(int(keep.sum()), 0.5, 42)
    for s in ("lac", "aps"):
        cp = SplitConformal(f"{s}_ye2024", 0.1, quantile="ye2024", empty="top1").fit(probs[cal], y[cal])
        sets = cp.predict_set(probs[test])
        ours = {str(kept_ids[t]): sorted(options[j] for j in np.flatnonzero(row)) for t, row in zip(test, sets)}
        assert ours == {k: sorted(v) for k, v in ref[s]["sets"].items()}


HAND_PROBS = {  # id: (probabilities of A..F, gold answer)
    0: ([0.50, 0.25, 0.13, 0.06, 0.04, 0.02], "B"),
    2: ([0.02, 0.03, 0.05, 0.09, 0.80, 0.01], "E"),
    4: ([0.60, 0.20, 0.10, 0.05, 0.03, 0.02], "A"),
    6: ([0.30, 0.40, 0.15, 0.08, 0.05, 0.02], "A"),
    8: ([0.05, 0.12, 0.70, 0.08, 0.03, 0.02], "B"),
    10: ([0.03, 0.04, 0.01, 0.005, 0.015, 0.90], "C"),
}


def hand_files(tmp_path):
    """Eleven items, ids 0..10. Ids 1, 3, 5, 7, 9 are the demonstrations the protocol drops: give them a confident,
    correct model so that any leak would change every number below. Logits are log-probabilities, so the float32
    softmax returns the probabilities above (to ~1e-7)."""
    logits, answers = [], []
    for i in range(11):
        if i in HAND_PROBS:
            probs, ans = HAND_PROBS[i]
            logits.append(np.log(np.array(probs, dtype=np.float64)))
            answers.append(ans)
        else:
            logits.append(np.array([20.0, 0, 0, 0, 0, 0]))
            answers.append("A")
    return write_ye_files(tmp_path, np.array(logits, dtype=np.float32), answers)


def test_ye2024_hand_computed(tmp_path):
    """alpha = 0.5, worked out by hand.

    After dropping ids 1,3,5,7,9 the items are ids [0, 2, 4, 6, 8, 10] at positions 0..5. sklearn's split:
    RandomState(42).permutation(6) = [0, 1, 5, 2, 4, 3]; n_train = floor(0.5 * 6) = 3, n_test = 3; test = positions
    [0, 1, 5] = ids 0, 2, 10; calibration = positions [2, 4, 3] = ids 4, 8, 6.
    q-hat: n = 3, ceil((n+1)(1-alpha)) = ceil(2.0) = 2; q_level = 2/3; np.quantile(..., 'higher') takes index
    ceil(2/3 * 2) = 2, the 3rd smallest (textbook would take the 2nd).
    LAC calibration scores 1 - p_y: id4 1-0.60 = 0.40, id6 1-0.30 = 0.70, id8 1-0.12 = 0.88 -> q-hat 0.88.
      test sets {j : p_j >= 1 - 0.88 = 0.12}: id0 {A .50, B .25, C .13} size 3, gold B covered;
      id2 {E .80} size 1 covered; id10 {F .90} size 1, gold C not covered.
      coverage 2/3, mean size 5/3.
    APS calibration scores (cumulative mass in descending order, through the gold option): id4 A: 0.60;
      id6 B .40 + A .30 = 0.70; id8 C .70 + B .12 = 0.82 -> q-hat 0.82.
      test: id0 A .50 <= .82, +B .75 <= .82, +C .88 > .82 stop -> {A, B} size 2 covered;
      id2 E .80 <= .82, +D .89 stop -> {E} size 1 covered; id10 F .90 > .82 -> empty -> top-1 {F}, not covered.
      coverage 2/3, mean size 4/3.
    Accuracy on the test part (argmax): id0 A != B, id2 E == E, id10 F != C -> 1/3. Top-1 is E for id2, F for id10:
    E rate 1/3, F rate 1/3. UAcc = acc * sqrt(6) / size: LAC (1/3) sqrt(6) / (5/3) = sqrt(6)/5;
    APS (1/3) sqrt(6) / (4/3) = sqrt(6)/4.
    """
    pkl, js, rows, data = hand_files(tmp_path)
    rec = analyze_artifact(import_ye2024(pkl, js), preset("ye2024", alpha=0.5))
    assert (rec["n"], rec["n_cal"], rec["n_test"]) == (6, 3, 3)
    assert rec["protocol"]["excluded_ids"] == ["1", "3", "5", "7", "9"]
    assert rec["acc"] == pytest.approx(1 / 3, abs=1e-12)
    assert rec["calibration"]["idk_rate"] == pytest.approx(1 / 3, abs=1e-12)
    assert rec["calibration"]["nota_rate"] == pytest.approx(1 / 3, abs=1e-12)
    assert rec["lac"]["qhat"] == pytest.approx(0.88, abs=1e-6)
    assert rec["lac"]["coverage"] == pytest.approx(2 / 3, abs=1e-12)
    assert rec["lac"]["set_size"] == pytest.approx(5 / 3, abs=1e-12)
    assert rec["lac"]["uacc"] == pytest.approx(math.sqrt(6) / 5, abs=1e-12)
    assert rec["lac"]["size_hist"] == pytest.approx([0, 2 / 3, 0, 1 / 3, 0, 0, 0])
    assert rec["aps"]["qhat"] == pytest.approx(0.82, abs=1e-6)
    assert rec["aps"]["coverage"] == pytest.approx(2 / 3, abs=1e-12)
    assert rec["aps"]["set_size"] == pytest.approx(4 / 3, abs=1e-12)
    assert rec["aps"]["uacc"] == pytest.approx(math.sqrt(6) / 4, abs=1e-12)
    assert rec["aps"]["size_hist"] == pytest.approx([0, 2 / 3, 1 / 3, 0, 0, 0, 0])
    # coverage by gold class: B (id0) covered, E (id2) covered, C (id10) not; no test item has gold A, D or F
    assert rec["lac"]["coverage_by_class"] == {"A": None, "B": 1.0, "C": 0.0, "D": None, "E": 1.0, "F": None}
    # the transcribed reference agrees
    ref = ref_all(data, rows, alpha=0.5)
    assert ref["lac"]["sets"] == {"0": ["A", "B", "C"], "2": ["E"], "10": ["F"]}
    assert ref["aps"]["sets"] == {"0": ["A", "B"], "2": ["E"], "10": ["F"]}
    # textbook quantile on the same split: q-hat = 2nd smallest LAC score 0.70, threshold p >= 0.30
    probs = softmax(np.log(np.array([HAND_PROBS[i][0] for i in (4, 8, 6)])), np.float32)
    y = np.array([options.index(HAND_PROBS[i][1]) for i in (4, 8, 6)])
    cp = SplitConformal("lac_ye2024", 0.5, quantile="textbook", empty="top1").fit(probs, y)
    assert float(cp.qhat_) == pytest.approx(0.70, abs=1e-6)


def test_ye2024_hand_case_through_cli(tmp_path, capsys):
    pkl, js, _, _ = hand_files(tmp_path)
    code = main(["analyze", str(pkl), "--labels", str(js), "--protocol", "ye2024", "--alpha", "0.5", "--json"])
    assert code == 0
    rec = json.loads(capsys.readouterr().out.strip())
    assert rec["lac"]["coverage"] == pytest.approx(2 / 3) and rec["aps"]["set_size"] == pytest.approx(4 / 3)
    assert rec["run_key"]["analysis"] == {"protocol": "ye2024", "alpha": 0.5, "splits": 1, "seed": 42,
                                          "cal_ratio": 0.5, "stratify": False}
    assert rec["run_key"]["score"]["model"] == "Model-7b" and rec["run_key"]["score"]["task"] == "qa"


def test_ye2024_preset_rules():
    key = preset("ye2024")
    assert (key.alpha, key.splits, key.seed, key.cal_ratio, key.stratify) == (0.1, 1, 42, 0.5, False)
    with pytest.raises(CpbenchError, match="exactly one split"):
        preset("ye2024", splits=5)
    with pytest.raises(CpbenchError, match="stratify"):
        preset("ye2024", stratify=True)
    with pytest.raises(CpbenchError, match="unknown protocol"):
        preset("ye2023")
