"""Scoring entry point: prompts + a loaded model -> `LogitsArtifact` with full provenance.

`score_prompts` runs letter or cloze scoring in resumable chunks under `torch.inference_mode()` and writes the
provenance keys of docs/design.md. The model arrives loaded (by `cpbench.weights.models.load`, which picks the dtype:
float32 on CPU, the entry's bf16/fp16 on GPU) and stays where it is.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cpbench.base.stamps import utc_now
from cpbench.results.artifact import LogitsArtifact
from cpbench.base.versions import versions
from cpbench.base.errors import CpbenchError
from cpbench.base.runkey import ScoreKey

BACKEND = "transformers"
DEFAULT_CHUNK_SIZE = 256
CLOZE_LOGIT = "sum_logprob"


def default_batch_size(device: str) -> int:
    return 32 if device.startswith("cuda") else 8


# ------------------------------------------------------------------------------------------------- fingerprints
def scoring_inputs_hash(prompts: Sequence[Any]) -> str:
    """sha256 over every prompt field that scoring reads, in order (the chunk cache key; `prompts_hash` in the
    provenance is cpbench.specs.tasks' hash of ids and texts)."""
    h = hashlib.sha256()
    for p in prompts:
        rec = [str(p.item_id), p.hash, int(p.label), list(p.letters), list(p.options), p.cloze_context, p.prefix]
        h.update(json.dumps(rec, ensure_ascii=False).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def model_fingerprint(model: Any) -> str:
    """The loaded weights' content hash (`model_hash`); cpbench.weights.identity.fingerprint owns the definition."""
    from cpbench.weights.identity import fingerprint

    return fingerprint(model)


def tokenizer_info(tokenizer: Any) -> dict[str, Any]:
    return {
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "bos_token": getattr(tokenizer, "bos_token", None),
        "adds_bos": bool(
            getattr(tokenizer, "bos_token_id", None) is not None
            and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
        ),
        "padding": "left, masked, explicit position_ids",
    }


# ------------------------------------------------------------------------------------------------- scoring
def _validate(prompts: Sequence[Any], key: ScoreKey) -> list[str]:
    if not prompts:
        raise CpbenchError(f"no prompts to score for {key.slug()}")
    letters = list(prompts[0].letters)
    ids = [str(p.item_id) for p in prompts]
    if len(set(ids)) != len(ids):
        raise CpbenchError(f"duplicate item ids among the prompts of {key.slug()}")
    for p in prompts:
        if list(p.letters) != letters:
            raise CpbenchError(f"item {p.item_id}: letters {list(p.letters)} differ from {letters}")
        if not 0 <= int(p.label) < len(letters):
            raise CpbenchError(f"item {p.item_id}: label {p.label} outside the {len(letters)} options")
        if key.scoring == "cloze" and len(p.options) != len(letters):
            raise CpbenchError(f"item {p.item_id}: {len(p.options)} option texts for {len(letters)} letters")
    return letters


def score_prompts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    key: ScoreKey,
    *,
    batch_size: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    cache_root: str | Path | None = None,
    resume: bool = True,
    use_prefix_cache: bool = True,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    model_hash: str | None = None,
    out_path: str | Path | None = None,
) -> LogitsArtifact:
    """Option logits for `prompts` as a LogitsArtifact; chunks are kept under `cache_root/scores` until done.

    `provenance` carries what only the caller knows (model_id, model_revision, model_source, recipe,
    compression_report, sample_data, notes); the scorer adds the rest. With `out_path` the artifact is saved there
    (atomically) and the job's chunk files are deleted.
    """
    import torch

    from cpbench.weights.models import current_threads
    from cpbench.backends.chunks import ChunkStore, run_chunked
    from cpbench.specs.tasks.prompts import prompts_hash

    letters = _validate(prompts, key)
    threads = current_threads()
    model.eval()
    device = str(next(model.parameters()).device)
    batch_size = int(batch_size or default_batch_size(device))
    notes: list[str] = []
    detail: dict[str, Any] = {"threads": threads, "chunk_size": int(chunk_size), "prefix_cache": use_prefix_cache}

    option_ids: dict[str, Any] | None = None
    if key.scoring == "letter":
        from cpbench.backends.letter import LetterScorer
        from cpbench.backends.tokens import check_prompt_continuation, form_for, resolve_option_tokens

        opt = resolve_option_tokens(tokenizer, letters, form_for([p.text for p in prompts]))
        for p in prompts[:3]:  # the prompt format is shared; three real prompts catch a merging tail
            check_prompt_continuation(tokenizer, p.text, opt)
        option_ids = opt.to_provenance()
        scorer: Any = LetterScorer(
            model, tokenizer, prompts, opt.ids, batch_size=batch_size, use_prefix_cache=use_prefix_cache
        )
        detail["work"] = scorer.work.stats()
        notes.extend(scorer.work.notes)
    elif key.scoring == "cloze":
        from cpbench.backends.cloze import DELIMITER, ClozeScorer

        scorer = ClozeScorer(model, tokenizer, prompts, batch_size=batch_size)
        detail["work"] = scorer.stats()
        detail["cloze"] = {
            "logit": CLOZE_LOGIT,
            "definition": "sum over the option's continuation tokens of log p(token | context, earlier tokens); "
            "softmax over the K sums gives the option distribution (lm-eval 'acc', not length-normalised)",
            "delimiter": DELIMITER,
            "context": "Prompt.cloze_context; continuation = delimiter + option text; split as lm-eval _encode_pair",
        }
    else:  # ScoreKey validates this; keep the message for direct callers
        raise CpbenchError(f"unknown scoring mode {key.scoring!r}")

    ids = [str(p.item_id) for p in prompts]
    p_hash = prompts_hash(prompts)
    inputs_hash = scoring_inputs_hash(prompts)
    m_hash = model_hash or model_fingerprint(model)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    tok_info = tokenizer_info(tokenizer)
    job = {
        "score_key": key.model_dump(),
        "inputs_hash": inputs_hash,
        "model_hash": m_hash,
        "tokenizer": tok_info,
        "option_token_ids": option_ids,
        "dtype": dtype,
        "device_type": device.split(":")[0],
        "batch_size": batch_size,
        "chunk_size": int(chunk_size),
        "prefix_cache": use_prefix_cache,
    }
    store = None
    if resume:
        from cpbench.base.paths import cache_dir

        root = Path(cache_root) if cache_root is not None else cache_dir()
        store = ChunkStore(root / "scores", job)
        detail["chunk_job"] = store.dir.name  # lets a later run remove chunks a kill left after the artifact was saved

    from cpbench.base import progress as progress_mod

    # cpbench's own progress (rich bar on a terminal, periodic lines in a log: whatever reporter the CLI installed)
    reporter = progress_mod.current() if progress else progress_mod.Reporter()
    desc = f"[{key.recipe}] score {key.task}/{key.prompt} ({key.scoring}, {dtype})"
    t0 = time.perf_counter()
    with reporter.task(desc, total=len(ids), unit="item") as bar, torch.inference_mode():
        # Progress per batch, not per chunk (a cell smaller than one chunk would otherwise sit at 0% until done):
        # this scorer instance's batch method reports the items it scored; chunks loaded from a resume are counted
        # when run_chunked reports them.
        scored = {"items": 0}
        batch = scorer._batch

        def batch_with_progress(idx: Any, *args: Any, **kwargs: Any) -> Any:
            out = batch(idx, *args, **kwargs)
            scored["items"] += len(idx)
            bar.advance(len(idx))
            return out

        def chunk_done(n: int) -> None:
            bar.advance(max(0, n - scored["items"]))
            scored["items"] = 0

        scorer._batch = batch_with_progress
        run = run_chunked(ids, scorer.order(), len(letters), scorer, store, chunk_size, on_progress=chunk_done)
    wall = time.perf_counter() - t0
    detail.update(
        chunks_loaded=len(run.loaded),
        chunks_computed=len(run.computed),
        items_computed=run.computed_items,
        wall_s=round(wall, 3),
        s_per_item=round(wall / run.computed_items, 5) if run.computed_items else None,
    )
    if run.loaded:
        notes.append(f"resumed: {len(run.loaded)} chunk(s) loaded from {store.dir if store else ''}")

    prov: dict[str, Any] = {
        "run_key": key.model_dump(),
        "model_id": getattr(model, "name_or_path", "") or key.model,
        "model_revision": None,
        "model_source": "local",
        "recipe": {"name": key.recipe},
        "compression_report": None,
        "sample_data": key.data == "samples",
    }
    prov.update(provenance or {})
    prov["notes"] = list(prov.get("notes") or []) + notes
    prov.update(
        {
            "tokenizer": tok_info,
            "option_token_ids": option_ids,
            "dtype": dtype,
            "device": device,
            "backend": BACKEND,
            "scoring": key.scoring,
            "scoring_detail": detail,
            "batch_size": batch_size,
            "prompts_hash": p_hash,
            "model_hash": m_hash,
            "versions": versions(),
            "created_at": utc_now(),
            "host": platform.platform(),
        }
    )
    artifact = LogitsArtifact(
        ids=ids,
        labels=np.array([int(p.label) for p in prompts], dtype=np.int64),
        logits=run.logits,
        letters=letters,
        provenance=prov,
        prompt_hashes=[p.hash for p in prompts],
    )
    if out_path is not None:
        artifact.save(out_path)
        if store is not None:
            store.remove()
    return artifact
