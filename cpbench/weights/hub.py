"""Is the Hugging Face hub reachable, and what to say when loading a hub model failed.

Owned here (the weights layer) because loading needs the hint; the run's pre-flight checks (cpbench.run.preflight)
ask the same question through this module, so one monkeypatch of `offline_reason` covers both.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Any

_TRUE = ("1", "true", "yes", "on")


@lru_cache(maxsize=1)
def _hub_reachable(host: str, timeout: float) -> str:
    """'' when a TCP connection to the hub opens, else why not (one attempt per process)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return ""
    except OSError as exc:
        return f"{host} is unreachable ({type(exc).__name__}: {exc})"


def offline_reason(probe: bool = True, timeout: float = 3.0) -> str:
    """Why the Hugging Face hub cannot be reached ('' when it can): HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set, or
    (with `probe`) no TCP connection to the hub endpoint within `timeout` seconds."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}={os.environ[var]} is set"
    if not probe:
        return ""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return _hub_reachable(host, timeout)


def hub_hint(entry: Any) -> str:
    """The hint to append when loading a hub model failed: offline first (the usual cause here), then gated."""
    if getattr(entry, "source", "hub") != "hub":
        return ""
    why = offline_reason()
    if why:
        return (f" (you are offline: {why}; the model is not in the local Hugging Face cache: download it where the "
                f"hub is reachable, or pass a local directory)")  # fmt: skip
    if getattr(entry, "gated", False):
        return " (gated: accept the licence on the hub and log in)"
    return ""
