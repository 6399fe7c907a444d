"""Which vocabulary ids stand for the option letters, resolved per tokenizer and verified.

Ye et al. (LLM-Uncertainty-Bench, `generate_logits.py`) take `tokenizer.encode("Answer: A")[-1]`: the token that a
model emits for the letter right after a prompt ending in `Answer:`. With BPE and SentencePiece vocabularies that is
the space-prefixed letter (" A", "▁A"). After a chat template's generation prompt (which ends in a newline) the model
starts a fresh line, and the bare letter ("A") carries the probability mass; Ye et al.'s chat script uses the last token
of "\\nA" for such tokenizers. We resolve both forms the same way and then check, on the real prompts, that appending
the letter to a prompt adds exactly that one token. A tokenizer that splits a letter, maps two letters to one id, or
merges the letter with the end of the prompt fails with a message naming the letter, instead of scoring wrong ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from cpbench.base.errors import CpbenchError

Form = Literal["space", "bare"]

# The probe strings whose last token is the option token (Ye et al.: "Answer: A"; chat / Yi variant: "\nA").
_PROBE = {"space": "Answer: {}", "bare": "\n{}"}
# What is appended to a prompt to continue it with the letter.
_JOIN = {"space": " ", "bare": ""}


@dataclass(frozen=True)
class OptionTokens:
    """The option letters' token ids for one tokenizer, in letter order."""

    letters: tuple[str, ...]
    ids: tuple[int, ...]
    tokens: tuple[str, ...]  # the vocabulary entries, e.g. "ĠA" (byte-level BPE) or "▁A" (SentencePiece)
    form: Form  # "space": letter follows "Answer:" after a space; "bare": letter starts a line (chat templates)

    def to_provenance(self) -> dict[str, Any]:
        return {
            "letters": list(self.letters),
            "ids": list(self.ids),
            "tokens": list(self.tokens),
            "form": self.form,
            "probe": _PROBE[self.form].replace("{}", "<letter>"),
        }


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def form_for(texts: Sequence[str]) -> Form:
    """Plain prompts end in `Answer:` (the letter follows a space); chat prompts end in the generation prompt
    (a newline, so the bare letter follows)."""
    ends_ws = {t[-1:].isspace() for t in texts if t}
    if len(ends_ws) > 1:
        raise CpbenchError("some prompts end in whitespace and some do not; cannot pick one set of option token ids")
    return "bare" if ends_ws == {True} else "space"


def resolve_option_tokens(tokenizer: Any, letters: Sequence[str], form: Form = "space") -> OptionTokens:
    """Last token of `"Answer: L"` (or `"\\nL"`) for each letter, checked to be one token that decodes to the letter."""
    if form not in _PROBE:
        raise CpbenchError(f"unknown option token form {form!r} (expected 'space' or 'bare')")
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    ids: list[int] = []
    for letter in letters:
        probe = _PROBE[form].format(letter)
        head = probe[: -len(letter) - len(_JOIN[form])]  # "Answer:" / "\n": what the letter (with its space) follows
        full, base = _encode(tokenizer, probe), _encode(tokenizer, head)
        # One token exactly: the probe's tokens are the head's tokens plus one, and that one decodes to the letter.
        if len(full) != len(base) + 1 or full[: len(base)] != base:
            pieces = tokenizer.convert_ids_to_tokens(full[len(base) - 1 if base else 0 :])
            raise CpbenchError(
                f"tokenizer {name}: option letter {letter!r} is not a single token after {head + _JOIN[form]!r} "
                f"(tokenized as {pieces}); letter scoring needs one token per option, use --scoring cloze"
            )
        decoded = tokenizer.decode([full[-1]])
        if decoded.strip() != letter:
            raise CpbenchError(
                f"tokenizer {name}: the last token of {probe!r} decodes to {decoded!r}, not the letter {letter!r}"
            )
        ids.append(int(full[-1]))
    if len(set(ids)) != len(ids):
        raise CpbenchError(f"tokenizer {name}: option letters {list(letters)} map to repeated token ids {ids}")
    tokens = tuple(str(t) for t in tokenizer.convert_ids_to_tokens(ids))
    return OptionTokens(letters=tuple(letters), ids=tuple(ids), tokens=tokens, form=form)


def check_prompt_continuation(tokenizer: Any, text: str, options: OptionTokens) -> None:
    """On a real prompt: tokenizing `text + letter` must give the prompt's tokens plus exactly the option's id.

    This catches a prompt whose last characters merge with the letter (e.g. a trailing space before " A"), which would
    make the scored id something the model never emits at that position.
    """
    base = list(tokenizer(text)["input_ids"])
    for letter, tid in zip(options.letters, options.ids):
        ext = list(tokenizer(text + _JOIN[options.form] + letter)["input_ids"])
        if ext[: len(base)] != base or ext[len(base) :] != [tid]:
            tail = tokenizer.convert_ids_to_tokens(ext[max(0, len(base) - 2) :])
            raise CpbenchError(
                f"prompt ending {text[-20:]!r} continued with {letter!r} tokenizes as ...{tail}, not the prompt's "
                f"tokens plus the option token {options.tokens[options.letters.index(letter)]!r}"
            )


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
