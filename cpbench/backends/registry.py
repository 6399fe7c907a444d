"""Backends by name, imported only when used (lm-eval's model registry style: lazy "module:Class" strings).

`--scorer NAME` and `cpbench.evaluate(backend=NAME)` look names up here; `cpbench.evaluate(backend=obj)` takes any
cpbench.backends.base.Backend instance directly. Adding a backend is one module and one line below.
"""

from __future__ import annotations

import importlib
from typing import Any

from cpbench.backends.base import Backend
from cpbench.base.config import did_you_mean
from cpbench.base.errors import CpbenchError

BACKENDS: dict[str, str] = {
    "hf": "cpbench.backends.hf:HFBackend",  # transformers, the reference scorer
    "vllm": "cpbench.backends.vllm:VllmBackend",  # GPU serving throughput, letters only
    "lm-eval-samples": "cpbench.backends.files:LmEvalSamplesBackend",  # lm-eval --log_samples files, paired by item
    "ye2024-pickles": "cpbench.backends.files:Ye2024PicklesBackend",  # LLM-Uncertainty-Bench logits pickles
}


def backend_class(name: str) -> type[Backend]:
    """The Backend class registered as `name` (one line naming the problem when there is none)."""
    target = BACKENDS.get(name)
    if target is None:
        hint = did_you_mean(name, list(BACKENDS)) or f" (known: {', '.join(BACKENDS)})"
        raise CpbenchError(f"unknown backend {name!r}{hint}")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise CpbenchError(f"backend {name!r}: {target} is not a cpbench.backends.base.Backend")
    return cls


def get_backend(spec: str | Backend, **kwargs: Any) -> Backend:
    """A Backend instance: `spec` itself when it is one, else the registered class built with `kwargs`."""
    if isinstance(spec, Backend):
        if kwargs:
            raise CpbenchError("backend arguments apply to a backend given by name")
        return spec
    return backend_class(str(spec))(**kwargs)
