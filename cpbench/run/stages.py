"""The sequential gate's item stages (cpbench.run.seqrun): one fixed random item order per task, and artifacts of the
first n items of it, so that a later stage scores only the items it adds. Below the runner: the cells reuse a
stored stage (cpbench.run.cells), the units tag their data with the order (cpbench.run.unit)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

from cpbench.base.errors import CpbenchError

SEQ_TAG = "~seq"


def seq_order(ids: Sequence[str], task: str, seed: int = 0) -> list[int]:
    """Positions of `ids` in the sequential gate's fixed random order (by a hash of seed, task and id)."""
    key = [hashlib.sha256(f"{seed}\x00{task}\x00{i}".encode()).digest() for i in ids]
    return sorted(range(len(ids)), key=lambda j: key[j])


def seq_tag(tag: str, seed: int) -> str:
    return f"{tag}{SEQ_TAG}{seed}"


# ------------------------------------------------------------------------------------------------ prefix reuse
def prefix(artifact: Any, n: int) -> Any:
    """The first n items of an artifact (in stored order) as a LogitsArtifact."""
    from cpbench.results.artifact import LogitsArtifact

    if n > artifact.n:
        raise CpbenchError(f"internal: prefix of {n} items of an artifact of {artifact.n}")
    key = dict(artifact.provenance.get("run_key") or {})
    if key:
        key["limit"] = int(n)
    prov = {**artifact.provenance, "run_key": key}
    ph = list(artifact.prompt_hashes)[:n] if getattr(artifact, "prompt_hashes", None) is not None else None
    return LogitsArtifact(ids=list(artifact.ids)[:n], labels=artifact.labels[:n], logits=artifact.logits[:n],
                          letters=list(artifact.letters), provenance=prov, prompt_hashes=ph)  # fmt: skip


def prefix_artifact(path: Path, key: Any, prompts: Sequence[Any], weights_id: str, device: str | None) -> Any:
    """The most items of `prompts` (a prefix) found in a stored artifact of the same cell with another --limit
    (same weights, same kind of device, same ids and prompts in the same order), as an artifact, or None."""
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.run.outputs import same_device_type

    d = path.parent
    if not d.is_dir() or key.limit is None:
        return None
    want = key.model_dump()
    best = None
    base = key.model_copy(update={"limit": None}).slug()
    for p in d.glob("*.parquet"):
        if p == path or not p.name.startswith(base.split("__limit")[0]):
            continue
        try:
            art = LogitsArtifact.load(p)
        except CpbenchError:
            continue
        prov = art.provenance
        rk = dict(prov.get("run_key") or {})
        m = rk.get("limit")
        if not isinstance(m, int) or m == key.limit or {**rk, "limit": key.limit} != want:
            continue
        if prov.get("weights_id") != weights_id or art.n != m:
            continue
        if not same_device_type(prov.get("device"), device):  # the device rule of reuse (cpbench.run.outputs)
            continue
        m = min(m, len(prompts))
        if list(art.ids)[:m] != [str(q.item_id) for q in prompts[:m]]:
            continue
        if art.prompt_hashes is not None and list(art.prompt_hashes)[:m] != [q.hash for q in prompts[:m]]:
            continue
        if best is None or m > best[0]:
            best = (m, art)
    if best is None:
        return None
    m, art = best
    return art if art.n == m else prefix(art, m)  # a longer stage holds these items as its prefix


def as_stage(head: Any, key: Any, prompts_hash: str) -> Any:
    """A stored stage's prefix that already holds every item of `key`, as the artifact of `key`."""
    from cpbench.results.artifact import LogitsArtifact

    prov = {**head.provenance, "run_key": key.model_dump(), "prompts_hash": prompts_hash}
    return LogitsArtifact(ids=list(head.ids), labels=head.labels, logits=head.logits, letters=list(head.letters),
                          provenance=prov, prompt_hashes=head.prompt_hashes)  # fmt: skip


def assemble(head: Any, tail: Any, key: Any, prompts_hash: str) -> Any:
    """head (a stored prefix) + tail (the new items) as the artifact of `key`."""
    import numpy as np

    from cpbench.results.artifact import LogitsArtifact

    if list(head.letters) != list(tail.letters):
        raise CpbenchError("internal: a stage's option letters differ from the previous stage's")
    prov = dict(tail.provenance)
    prov["run_key"] = key.model_dump()
    prov["prompts_hash"] = prompts_hash
    prov["notes"] = list(prov.get("notes") or []) + [
        f"assembled: the first {head.n} items reused from {Path(str(head.source or '')).name or 'a previous stage'}"
        f", {tail.n} scored now"
    ]
    prov["extra"] = {**(prov.get("extra") or {}),
                     "assembled": {"prefix_items": head.n, "prefix_hash": head.content_hash, "new_items": tail.n}}
    ph = None
    if head.prompt_hashes is not None and tail.prompt_hashes is not None:
        ph = list(head.prompt_hashes) + list(tail.prompt_hashes)
    return LogitsArtifact(ids=list(head.ids) + list(tail.ids),
                          labels=np.concatenate([np.asarray(head.labels), np.asarray(tail.labels)]),
                          logits=np.concatenate([np.asarray(head.logits), np.asarray(tail.logits)]),
                          letters=list(head.letters), provenance=prov, prompt_hashes=ph)  # fmt: skip
