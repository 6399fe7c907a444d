"""vLLM scorer (`--scorer vllm`): the same option-letter logits as the HF scorer, at GPU serving throughput.

The HF scorer (`cpbench.backends.letter`) stays the reference. This backend feeds vLLM's offline `LLM` exactly the
token ids the HF scorer would run (`tokenizer(prompt.text)["input_ids"]`, as `{"prompt_token_ids": ids}`, so
tokenization cannot differ), asks for one generated position (`max_tokens=1`, greedy) and reads the values of exactly
the six option-letter ids at that position through per-request token-id logprobs (`logprob_token_ids`) with the engine
in `logprobs_mode="raw_logits"`: raw next-token logits, like the HF scorer's. `prompt_logprobs` is not used: it does
not include the last prompt position, which is the one that matters. Prefix caching shares the demonstrations'
KV across prompts; tensor parallelism spans the GPUs the unit was given.

vLLM is CUDA-only and pins torch / compressed-tensors versions that conflict with llm-compressor's: it lives in its
own extra (`pip install 'cpbench[vllm]'`) in a second environment that only scores (docs/full-benchmark.md).

The request builder and the output parser are plain functions, unit-tested on constructed outputs without vLLM.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cpbench.backends.base import Backend, Prepared, WeightsRequest
from cpbench.base.errors import CpbenchError
from cpbench.base.versions import versions

BACKEND = "vllm"
LOGPROBS_MODE = "raw_logits"


# ------------------------------------------------------------------------------------------------- requests
def build_requests(tokenizer: Any, prompts: Sequence[Any]) -> list[dict[str, list[int]]]:
    """One vLLM prompt per cpbench prompt: the HF tokenizer's ids of the exact text (default special tokens), as the
    HF letter scorer tokenizes it."""
    if not prompts:
        return []
    ids = tokenizer([p.text for p in prompts])["input_ids"]
    return [{"prompt_token_ids": [int(t) for t in row]} for row in ids]


def sampling_kwargs(option_ids: Sequence[int]) -> dict[str, Any]:
    """`SamplingParams` keywords: one greedy position, the option ids' values at it, no detokenizing."""
    ids = [int(i) for i in option_ids]
    if len(set(ids)) != len(ids):
        raise CpbenchError(f"option token ids are not distinct: {ids}")
    return {"max_tokens": 1, "temperature": 0.0, "logprob_token_ids": ids, "detokenize": False, "seed": 0}


def engine_kwargs(model_dir: str, *, tensor_parallel_size: int = 1, dtype: str = "auto", revision: str | None = None,
                  trust_remote_code: bool = False, max_model_len: int | None = None,
                  gpu_memory_utilization: float = 0.85) -> dict[str, Any]:  # fmt: skip
    """`vllm.LLM` keywords: raw logits mode, prefix caching, tensor parallel, a fixed seed."""
    kw: dict[str, Any] = {
        "model": model_dir,
        "tokenizer": model_dir,
        "tensor_parallel_size": int(tensor_parallel_size),
        "dtype": dtype,
        "enable_prefix_caching": True,
        "logprobs_mode": LOGPROBS_MODE,
        "seed": 0,
        "trust_remote_code": trust_remote_code,
        "gpu_memory_utilization": gpu_memory_utilization,
    }
    if revision is not None:
        kw["revision"] = revision
    if max_model_len is not None:
        kw["max_model_len"] = int(max_model_len)
    return kw


def tensor_parallel_size(n_gpus: int, num_heads: int | None) -> int:
    """Largest power of two <= the visible GPUs that divides the attention heads (vLLM's TP constraint)."""
    tp = 1
    while tp * 2 <= max(1, n_gpus) and (num_heads is None or num_heads % (tp * 2) == 0):
        tp *= 2
    return tp


# ------------------------------------------------------------------------------------------------- outputs
def _value(entry: Any) -> float:
    """A vLLM `Logprob` (`.logprob`), or a plain number / {"logprob": x} from a recorded output."""
    if isinstance(entry, Mapping):
        entry = entry.get("logprob")
    value = getattr(entry, "logprob", entry)
    return float(value)


def _position_map(output: Any) -> Mapping[Any, Any]:
    """The {token id: Logprob} of the first generated position of one RequestOutput (or its recorded dict)."""
    completions = output["outputs"] if isinstance(output, Mapping) else output.outputs
    if not completions:
        raise CpbenchError("vLLM returned a request without completions")
    first = completions[0]
    logprobs = first["logprobs"] if isinstance(first, Mapping) else first.logprobs
    if not logprobs:
        raise CpbenchError("vLLM returned no logprobs; was logprob_token_ids passed and is vLLM >= 0.33?")
    return logprobs[0]


def parse_outputs(outputs: Sequence[Any], option_ids: Sequence[int], n_expected: int | None = None) -> np.ndarray:
    """Option logits [n, K] (float32) from `LLM.generate` outputs (input order), one column per option id."""
    if n_expected is not None and len(outputs) != n_expected:
        raise CpbenchError(f"vLLM returned {len(outputs)} outputs for {n_expected} prompts")
    ids = [int(i) for i in option_ids]
    out = np.empty((len(outputs), len(ids)), dtype=np.float32)
    for row, output in enumerate(outputs):
        pos = _position_map(output)
        # recorded outputs (JSON) have string keys
        lookup = {int(k): v for k, v in pos.items()}
        missing = [i for i in ids if i not in lookup]
        if missing:
            raise CpbenchError(f"vLLM output {row} lacks option token id(s) {missing}: logprob_token_ids ignored?")
        values = [_value(lookup[i]) for i in ids]
        if not all(math.isfinite(v) for v in values):
            raise CpbenchError(f"vLLM output {row}: non-finite option logits {values}")
        out[row] = values
    return out


# ------------------------------------------------------------------------------------------------- engine
def require_vllm(device: str) -> Any:
    """The vllm module, or one line saying why it cannot be used here."""
    import importlib.util

    if not str(device).startswith("cuda"):
        raise CpbenchError(f"--scorer vllm needs a CUDA GPU (device is {device!r}); use --scorer hf on CPU")
    import torch

    if not torch.cuda.is_available():
        raise CpbenchError("--scorer vllm needs a CUDA GPU and none is visible; use --scorer hf")
    if importlib.util.find_spec("vllm") is None:
        raise CpbenchError("--scorer vllm needs vLLM in its own environment: pip install 'cpbench[vllm]' "
                           "(it pins other torch/compressed-tensors versions; see docs/full-benchmark.md)")  # fmt: skip
    import vllm

    return vllm


class VllmModel:
    """A vLLM engine over one checkpoint directory (or hub id), with the HF tokenizer cpbench tokenizes with."""

    def __init__(self, model_dir: str, tokenizer: Any, device: str = "cuda", *, revision: str | None = None,
                 trust_remote_code: bool = False, dtype: str = "auto"):  # fmt: skip
        vllm = require_vllm(device)
        import torch

        cfg = _config(model_dir, revision, trust_remote_code)
        heads = getattr(cfg, "num_attention_heads", None) if cfg is not None else None
        self.tp = tensor_parallel_size(torch.cuda.device_count(), heads)
        self.kwargs = engine_kwargs(model_dir, tensor_parallel_size=self.tp, dtype=dtype, revision=revision,
                                    trust_remote_code=trust_remote_code)  # fmt: skip
        self.llm = vllm.LLM(**self.kwargs)
        self.vllm = vllm
        self.tokenizer = tokenizer
        self.name_or_path = model_dir
        self.device = f"cuda ({self.tp} GPU tensor parallel)" if self.tp > 1 else "cuda:0"
        self.gpu = torch.cuda.get_device_name(0)

    def option_logits(self, requests: Sequence[dict], option_ids: Sequence[int]) -> np.ndarray:
        params = self.vllm.SamplingParams(**sampling_kwargs(option_ids))
        outputs = self.llm.generate(list(requests), sampling_params=params, use_tqdm=False)
        return parse_outputs(outputs, option_ids, len(requests))

    def close(self) -> None:
        del self.llm
        import gc

        gc.collect()


def _config(model_dir: str, revision: str | None, trust_remote_code: bool) -> Any:
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model_dir, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None


class VllmBackend(Backend):
    """`--scorer vllm`: letter logits from a vLLM engine over the same checkpoint the HF scorer would load."""

    name = "vllm"

    @classmethod
    def check_scoring(cls, scoring: str) -> None:
        if scoring != "letter":
            raise CpbenchError("--scorer vllm scores letters only "
                               "(cloze needs per-token log-likelihoods: use --scorer hf)")

    def check(self, device: str, scoring: str) -> None:
        self.check_scoring(scoring)
        require_vllm(device)

    def load(self, weights: WeightsRequest) -> VllmModel:
        from cpbench.weights import models

        entry, recipe, ckpt = weights.entry, weights.recipe, weights.checkpoint
        if weights.loaded is not None or weights.candidate is not None:
            raise CpbenchError("--scorer vllm serves registry models and cpbench checkpoints; score candidates and "
                               "in-memory models with --scorer hf")  # fmt: skip
        if recipe is not None and recipe.load_time:
            raise CpbenchError(f"recipe {recipe.name!r} quantizes while loading with bitsandbytes; use --scorer hf")
        path = ckpt.path if ckpt is not None else None
        tok = models.load_tokenizer(path if path is not None else entry)
        where = str(path) if path is not None else models.model_dir(entry)
        revision = entry.revision if path is None and entry.source == "hub" else None
        # the dtype the HF scorer would use on this GPU (vLLM's "auto" turns a float32 config into float16)
        dtype = str(models.resolve_dtype(None, weights.device, entry)).removeprefix("torch.")
        return VllmModel(where, tok, weights.device, revision=revision, trust_remote_code=entry.trust_remote_code,
                         dtype=dtype)  # fmt: skip

    def prepare(self, engine: VllmModel, prompts: Sequence[Any], key: Any, *,
                batch_size: int | None = None) -> Prepared:  # fmt: skip
        from importlib import metadata

        from cpbench.backends.tokens import check_prompt_continuation, form_for, resolve_option_tokens, tokenizer_info

        if key.scoring != "letter":
            raise CpbenchError("--scorer vllm scores letters only; use --scorer hf for cloze")
        tok = engine.tokenizer
        letters = list(prompts[0].letters)
        opt = resolve_option_tokens(tok, letters, form_for([p.text for p in prompts]))
        for p in prompts[:3]:
            check_prompt_continuation(tok, p.text, opt)
        requests = build_requests(tok, prompts)
        # longest first, then input order: a batch that does not fit fails at once; a pure function of the prompts
        order = np.lexsort((np.arange(len(requests)), -np.array([len(r["prompt_token_ids"]) for r in requests])))
        try:
            vllm_version = metadata.version("vllm")
        except metadata.PackageNotFoundError:  # an engine stand-in (tests)
            vllm_version = "not-installed"
        tok_info = tokenizer_info(tok)
        job = {"backend": BACKEND, "tokenizer": tok_info, "option_token_ids": opt.to_provenance(),
               "engine": {k: v for k, v in engine.kwargs.items() if k != "model"}, "vllm": vllm_version}  # fmt: skip
        detail = {"prefix_cache": "vllm automatic prefix caching", "tensor_parallel": engine.tp,
                  "logprobs_mode": LOGPROBS_MODE, "gpu": engine.gpu, "device": engine.device}  # fmt: skip
        return Prepared(
            order=order, compute=lambda idx: engine.option_logits([requests[i] for i in idx], opt.ids), job=job,
            detail=detail, model_id=engine.name_or_path,
            notes=["scored with vLLM (raw logits of the option ids at the last position); the HF scorer is the "
                   "reference: values differ from it within bf16 kernel tolerance and may depend on batch makeup"],
            provenance={
                "tokenizer": tok_info, "option_token_ids": opt.to_provenance(), "dtype": engine.kwargs["dtype"],
                "device": "cuda", "backend": BACKEND, "scorer": "vllm", "batch_size": None,
                "versions": {**versions(), "vllm": vllm_version},
            },
        )  # fmt: skip

    def close(self, engine: VllmModel) -> None:
        engine.close()


def score_prompts_vllm(
    engine: VllmModel,
    prompts: Sequence[Any],
    key: Any,
    *,
    chunk_size: int = 256,
    provenance: dict[str, Any] | None = None,
    out_path: str | Path | None = None,
    resume: bool = True,
) -> Any:
    """Option logits for `prompts` as a LogitsArtifact (backend "vllm") through the shared pipeline."""
    from cpbench.backends.pipeline import score_with

    if key.scoring != "letter":
        raise CpbenchError("--scorer vllm scores letters only; use --scorer hf for cloze")
    return score_with(VllmBackend(), engine, prompts, key, chunk_size=chunk_size, provenance=provenance,
                      out_path=out_path, resume=resume, progress=False)  # fmt: skip
