"""Provenance stamps shared by every stage: file digests and UTC timestamps, written one way everywhere."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (weights and datasets can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    """UTC time as ISO 8601 with a Z, to the second (provenance `created_at`, `analyzed_at`)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
