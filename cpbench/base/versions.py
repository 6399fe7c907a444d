"""The versions of the stack that produced an artifact or a checkpoint, recorded in its provenance."""

from __future__ import annotations

import platform
from importlib import metadata


def versions() -> dict[str, str | None]:
    def v(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    from cpbench import __version__

    return {
        "python": platform.python_version(),
        "torch": v("torch"),
        "transformers": v("transformers"),
        "llmcompressor": v("llmcompressor"),
        "compressed_tensors": v("compressed-tensors"),
        "cpbench": __version__,
    }
