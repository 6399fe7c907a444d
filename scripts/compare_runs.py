"""Compare two cpbench results trees: logits identical, every artifact-provenance and record field equal except
timestamps, paths and timings."""
import json, sys
from pathlib import Path
import numpy as np
from cpbench.results.artifact import LogitsArtifact

VOLATILE = {"created_at", "analyzed_at", "imported_at", "artifact_path", "input", "scoring_detail", "wall_s",
            "artifact_hash", "content_hash", "host", "chunk_job", "s_per_item", "log", "checkpoint_path"}
def strip(x, path=""):
    if isinstance(x, dict):
        return {k: strip(v, path + "/" + k) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [strip(v, path) for v in x]
    return x
def diff(a, b, where=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                print(f"  key {where}/{k}: only in {'new' if k in b else 'old'}"); continue
            diff(a[k], b[k], where + "/" + k)
    elif a != b:
        print(f"  {where}: {str(a)[:80]} != {str(b)[:80]}")
old, new = Path(sys.argv[1]), Path(sys.argv[2])
n = 0
for p in sorted(old.rglob("artifacts/*.parquet")):
    q = new / p.relative_to(old)
    a, b = LogitsArtifact.load(p), LogitsArtifact.load(q)
    same = np.array_equal(a.logits, b.logits) and a.ids == b.ids and np.array_equal(a.labels, b.labels)
    print(p.name, "logits identical" if same else f"LOGITS DIFFER max {np.abs(a.logits-b.logits).max()}")
    diff(strip(a.provenance), strip(b.provenance), "provenance"); n += 1
for p in sorted(old.rglob("*.json")):
    if p.name.startswith("run-"): continue
    q = new / p.relative_to(old)
    diff(strip(json.loads(p.read_text())), strip(json.loads(q.read_text())), p.name); n += 1
print("compared", n)
