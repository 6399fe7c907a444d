"""Scoring backend (transformers): prompts + model -> option logits (`LogitsArtifact`).

- `tokens`: option-letter token ids per tokenizer (Ye et al.'s last token of "Answer: A"), verified.
- `letter`: one forward pass per prompt, option-letter logits at the last position, prefix KV cache reused.
- `cloze`: summed log-likelihood of each option text as a continuation (lm-eval's loglikelihood).
- `chunks`: resumable, atomically flushed chunks.
- `score`: `score_prompts(...)`, the entry point, with provenance.

Importing this package imports nothing heavy; the modules import torch.
"""
