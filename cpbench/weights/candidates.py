"""A candidate against its base: is the comparison meaningful (same tokenizer and architecture), and what are its
weights (quantization config as saved, sparsity and 2:4 pattern as measured, size on disk, fingerprint)?

`pairing_problem(base, candidate)` is checked before any weights load: option logits are read at token ids, so a
candidate whose tokenizer maps the option letters (or anything else) to other ids, or whose architecture differs, is
not "the base model compressed" and is refused with one line. `describe(candidate)` is what cpbench can read without
loading (it goes into the run's recipe spec); `measure(model, candidate)` is what it measures on the loaded weights,
reusing cpbench.weights.compress.verify's per-layer measurements (it goes into `compression_report`, as a compressed
checkpoint's verification does).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpbench.base.errors import CpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.weights.models import Candidate

# config.json fields that compression leaves alone: a difference means another architecture (or another model)
ARCH_FIELDS = ("model_type", "architectures", "vocab_size", "hidden_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "intermediate_size")  # fmt: skip
LETTERS = ("A", "B", "C", "D", "E", "F")
PROBES = ("Question: Which option is right?\nA. one\nB. two\nAnswer:", "E. I don't know F. None of the above")
# quantization_config fields worth naming, per format (compressed-tensors is summarised by compress.verify)
_QC_FIELDS = ("quant_method", "bits", "group_size", "sym", "desc_act", "version", "zero_point", "checkpoint_format",
              "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
              "bnb_4bit_compute_dtype", "quant_type", "weights", "activations")  # fmt: skip


def _vocab_hash(tok: Any) -> tuple[int, str]:
    vocab = tok.get_vocab()
    h = hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest()
    return len(vocab), h[:16]


def _option_ids(tok: Any) -> dict[str, list[int]]:
    out = {}
    for form, probe in (("space", "Answer: {}"), ("bare", "\n{}")):
        out[form] = [list(tok(probe.format(letter), add_special_tokens=False)["input_ids"])[-1] for letter in LETTERS]
    return out


def tokenizer_problem(base_tok: Any, cand_tok: Any) -> str | None:
    """Why two tokenizers would make option logits incomparable, or None when they agree."""
    b_ids, c_ids = _option_ids(base_tok), _option_ids(cand_tok)
    for form in ("space", "bare"):
        if b_ids[form] != c_ids[form]:
            i = next(j for j, (x, y) in enumerate(zip(b_ids[form], c_ids[form])) if x != y)
            shown = ("Answer: " if form == "space" else "\\n") + LETTERS[i]
            return f"option {LETTERS[i]!r} (last token of {shown!r}) is id {c_ids[form][i]}, base has {b_ids[form][i]}"
    (bn, bh), (cn, ch) = _vocab_hash(base_tok), _vocab_hash(cand_tok)
    if (bn, bh) != (cn, ch):
        return f"vocabulary differs ({cn} tokens, base has {bn})" if bn != cn else "vocabulary differs (same size)"
    # What the scorer feeds the model: the same text must give the same ids, special tokens included (a BOS added by
    # one tokenizer and not the other shifts every position). eos/pad ids are not compared: padding is masked, and
    # converters disagree on them (transformers' GGUF reader reports eos = bos for byte-level BPE vocabularies).
    for probe in PROBES:
        b, c = list(base_tok(probe)["input_ids"]), list(cand_tok(probe)["input_ids"])
        if b != c:
            return f"{probe[:30]!r} encodes to {c[:8]}..., base gives {b[:8]}..."
    return None


def architecture_problem(base_cfg: dict[str, Any], cand_cfg: dict[str, Any]) -> str | None:
    for f in ARCH_FIELDS:
        b, c = base_cfg.get(f), cand_cfg.get(f)
        if b is not None and c is not None and b != c:
            return f"{f} is {c}, base has {b}"
    return None


def pairing_problem(base_tok: Any, base_cfg: dict[str, Any], candidate: Candidate) -> str | None:
    """One line saying why `candidate` cannot be judged against the base, or None."""
    problem = architecture_problem(base_cfg, candidate.config())
    if problem:
        return f"architecture differs from the base: {problem}"
    problem = tokenizer_problem(base_tok, candidate.tokenizer())
    if problem:
        return f"tokenizer differs from the base: {problem}; its option logits would not be comparable"
    return None


def require_pairable(base_tok: Any, base_cfg: dict[str, Any], candidate: Candidate, base_name: str) -> None:
    problem = pairing_problem(base_tok, base_cfg, candidate)
    if problem:
        raise CpbenchError(f"candidate {candidate.name!r} cannot be compared with {base_name}: {problem}")


# ------------------------------------------------------------------------------------------------- description
def quantization(qc: Any) -> dict[str, Any] | None:
    """What a checkpoint's `quantization_config` says (method, bits, group size, scheme), format-independent."""
    if not isinstance(qc, dict) or not qc:
        return None
    if qc.get("quant_method") == "compressed-tensors":
        from cpbench.weights.compress.verify import quantization_summary

        return quantization_summary(qc)
    return {k: qc[k] for k in _QC_FIELDS if k in qc and isinstance(qc[k], (str, int, float, bool, type(None)))}


def local_path(candidate: Candidate) -> Path | None:
    """Where the candidate's files are on disk (a directory, or the .gguf file), when they are."""
    e = candidate.entry
    if e.source == "local":
        return Path(e.hf_id) / e.gguf_file if e.gguf_file else Path(e.hf_id)
    if e.source == "hub":
        from cpbench.weights.identity import hub_snapshot

        return hub_snapshot(e.hf_id, e.revision)
    return None


def size_on_disk(path: Path | None) -> int | None:
    if path is None:
        return None
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())  # stat follows hub-cache symlinks


def describe(candidate: Candidate) -> dict[str, Any]:
    """The candidate's recipe spec: its name, where it comes from and its saved quantization config (no loading)."""
    w = candidate.weights()
    cfg = candidate.config()
    return {
        "candidate": candidate.name,
        "source": w.source,
        "id": w.id,
        "revision": w.commit or w.revision,
        "gguf_file": w.gguf_file,
        "quantization": quantization(cfg.get("quantization_config")),
        "checkpoint_bytes": size_on_disk(local_path(candidate)),
    }


# ------------------------------------------------------------------------------------------------- measurement
def measure(model: Any, candidate: Candidate) -> dict[str, Any]:
    """Measured on the loaded weights (dense Linear layers; quantized kernels without a dense weight are counted but
    not measured): zeros per layer, 2:4 blocks per layer, distinct values per quantization group, parameter count,
    size on disk and the weights' fingerprint. A JSON-able dict for `compression_report`."""
    import torch

    from cpbench.weights.compress.verify import MAX_ROWS, max_distinct_per_group, nm_fraction
    from cpbench.weights.identity import fingerprint

    q = quantization(candidate.config().get("quantization_config")) or {}
    group = (q.get("groups") or [{}])[0] if q.get("groups") else {"group_size": q.get("group_size"),
                                                                    "strategy": "group" if q.get("group_size") else None}  # fmt: skip
    layers: dict[str, dict[str, Any]] = {}
    unmeasured: list[str] = []
    zeros_total = numel_total = 0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.endswith("lm_head") or not hasattr(mod, "in_features"):
                continue
            w = getattr(mod, "weight", None)
            if not isinstance(mod, torch.nn.Linear) or w is None or w.dim() != 2 or not w.is_floating_point():
                unmeasured.append(name)
                continue
            z = int((w == 0).sum())
            zeros_total += z
            numel_total += w.numel()
            rec: dict[str, Any] = {"zeros": round(z / w.numel(), 6), "shape": list(w.shape),
                                   "nm_2_4": round(nm_fraction(w, 2, 4), 6)}  # fmt: skip
            if q:
                rec["distinct_max"] = max_distinct_per_group(w, group.get("group_size"), group.get("strategy"),
                                                             MAX_ROWS)  # fmt: skip
            layers[name] = rec
        params = int(sum(p.numel() for p in model.parameters()))
    nm = [r["nm_2_4"] for r in layers.values()]
    zeros = [r["zeros"] for r in layers.values()]
    return {
        "schema": "cpbench.candidate/1",
        "kind": "candidate",
        "candidate": candidate.name,
        "quantization_config": q or None,
        "checkpoint_bytes": size_on_disk(local_path(candidate)),
        "params": params,
        "fingerprint": fingerprint(model),
        "layers": layers,
        "unmeasured_layers": unmeasured,
        "summary": {
            "measured_layers": len(layers),
            "sparsity": round(zeros_total / numel_total, 6) if numel_total else None,
            "zeros_min": min(zeros) if zeros else None,
            "zeros_max": max(zeros) if zeros else None,
            "pattern_2_4": bool(nm) and min(nm) == 1.0,
            "nm_2_4_min": min(nm) if nm else None,
            "distinct_max": max((r.get("distinct_max", 0) for r in layers.values()), default=None) if q else None,
        },
    }


def result_dirs(base: str, candidate: str, name: str | None, results: str | Path) -> tuple[Path, Path]:
    """Where `cpbench run --model BASE --candidate C [--candidate-name NAME] --results R` puts the base's and the
    candidate's records: `R/<base key>/base` and `R/<base key>/<name>` (CI scripts pass them to `cpbench check`).
    Cheap: resolves names only, loads nothing."""
    from cpbench.weights.models import resolve, resolve_candidate
    from cpbench.base.runkey import safe_part

    model_dir = Path(results) / safe_part(resolve(base).key)
    return model_dir / "base", model_dir / safe_part(resolve_candidate(candidate, name or None).name)
