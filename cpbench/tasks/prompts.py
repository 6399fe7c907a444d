"""The prompt builder: Ye et al.'s prompt format, byte for byte, testable without a model.

One item (the format of `format_example` in Ye et al.'s `generate_logits.py`):

    [Context|Dialogue|Document]: {context}\\n        (no such line for QA)
    Question: {question}\\n
    Choices:\\n
    A. {text}\\n ... F. {text}\\n
    Answer:                                        (no trailing space; a demonstration adds " {answer}\\n")

Methods: `base` (no instruction), `shared` (one instruction for all tasks), `task` (task-specific instruction).
Zero-shot: `{instruction.zero_shot}\\n\\n{item}`. Few-shot: `{instruction.few_shot}\\n\\n{demo}{demo}...\\n{closing}\\n\\n
{item}`; `base` few-shot is `{demo}{demo}...{item}`. The instruction texts live in the task YAML.
Chat: `v1` wraps the whole prompt as one user message with the tokenizer's chat template (generation prompt added);
`v2` (and `none`) use the plain prompt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from cpbench.errors import CpbenchError
from cpbench.tasks.schema import LETTERS, Item, TaskSpec

log = logging.getLogger(__name__)

METHODS = ("base", "shared", "task")
CHATS = ("none", "v1", "v2")
# Marks the end of the shared part when rendering it through a chat template; nothing real contains it.
_SENTINEL = "\u241eCPBENCH-PREFIX-END\u241e"


@dataclass(frozen=True)
class Prompt:
    """One model input. `text.startswith(prefix)`; `prefix` is the same for every prompt of one build call."""

    item_id: str
    text: str  # exact model input: ends with "Answer:" (or the chat template's generation prompt for chat v1)
    prefix: str  # part shared by every prompt of the build call (instruction + demonstrations, trailing whitespace
    #              left to `text`); "" when none
    label: int  # index of the gold letter in `letters`
    letters: list[str]
    options: list[str]  # the six option texts, for cloze scoring
    cloze_context: str  # the item without its choices list, ending in "Answer:" (no instruction, no demos)
    hash: str  # "sha256:<hex>" of `text`


def text_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompts_hash(prompts: Sequence[Prompt]) -> str:
    """One hash for a whole build (provenance key `prompts_hash`): ids and per-prompt hashes, in order."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(f"{p.item_id}\t{p.hash}\n".encode("utf-8"))
    return "sha256:" + h.hexdigest()


def item_header(item: Item, context_label: Optional[str], context: Optional[str] = None) -> str:
    """`Context: ...\\nQuestion: ...\\n` (or just the question line for QA)."""
    ctx = item.context if context is None else context
    head = f"{context_label}: {ctx}\n" if context_label else ""
    return head + f"Question: {item.question}\n"


def format_item(item: Item, context_label: Optional[str], with_answer: bool = False,
                context: Optional[str] = None) -> str:
    """One item in Ye et al.'s format; a demonstration (`with_answer`) ends with ` {answer}\\n`."""
    text = item_header(item, context_label, context) + "Choices:\n"
    text += "".join(f"{letter}. {item.choices[letter]}\n" for letter in LETTERS)
    text += "Answer:"
    return (text + f" {item.answer}\n") if with_answer else text


def cloze_context(item: Item, context_label: Optional[str], context: Optional[str] = None) -> str:
    return item_header(item, context_label, context) + "Answer:"


def frame(spec: TaskSpec, method: str, shots: int) -> tuple[str, str]:
    """(head, tail) around the demonstrations: instruction before, closing line after (few-shot shared/task)."""
    if method == "base":
        return "", ""
    texts = spec.prompts.shared if method == "shared" else spec.prompts.task
    if shots == 0:
        return texts.zero_shot + "\n\n", ""
    return texts.few_shot + "\n\n", "\n" + spec.prompts.closing + "\n\n"


def demonstrations(spec: TaskSpec, items: Sequence[Item], shots: int) -> list[Item]:
    """The first `shots` demonstration items, in the order the task lists their ids."""
    if shots == 0:
        return []
    ids = spec.demonstrations.ids
    if shots > len(ids):
        raise CpbenchError(f"task {spec.name!r} has {len(ids)} demonstrations (ids {ids}); asked for {shots} shots "
                           f"(use --shots {len(ids)} or fewer)")
    by_id = {str(it.id): it for it in items}
    missing = [i for i in ids[:shots] if str(i) not in by_id]
    if missing:
        raise CpbenchError(f"task {spec.name!r}: demonstration ids {missing} are not among the items "
                           f"(few-shot needs them; load the full item file, not a slice without them)")
    return [by_id[str(i)] for i in ids[:shots]]


def _chat_renderer(tokenizer: Any) -> Callable[[str], str]:
    def render(content: str) -> str:
        try:
            out = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                add_generation_prompt=True)
        except Exception as exc:  # no template, template error: one line
            raise CpbenchError(f"chat v1 needs a tokenizer with a chat template ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); use chat v2 or none") from None
        if not isinstance(out, str):
            raise CpbenchError("tokenizer.apply_chat_template(tokenize=False) did not return a string")
        return out

    return render


def _token_counter(tokenizer: Any) -> Callable[[str], int]:
    # Counted the way the text is fed to the model (the tokenizer's defaults, as in Ye et al.'s scripts).
    return lambda text: len(tokenizer(text)["input_ids"])


def _fit(item: Item, spec: TaskSpec, head: str, demo_texts: list[str], tail: str, render: Callable[[str], str],
         count: Callable[[str], int], max_tokens: int) -> tuple[int, str, str]:
    """(demos dropped, context used, text) within the budget: drop the oldest demonstrations first, then cut the
    left of the item's context at word starts; the question, options and `Answer:` are never cut."""
    label = spec.context_label

    def build(k: int, ctx: str) -> str:
        return render(head + "".join(demo_texts[k:]) + tail + format_item(item, label, context=ctx))

    for k in range(len(demo_texts) + 1):
        text = build(k, item.context)
        if count(text) <= max_tokens:
            return k, item.context, text
    k = len(demo_texts)
    starts = [m.start() for m in re.finditer(r"\S+", item.context)] + [len(item.context)]
    # Smallest number of leading words to drop; token counts fall (weakly) as words go, so bisect.
    lo, hi = 1, len(starts) - 1
    if hi < 1 or count(build(k, "")) > max_tokens:
        n_min = count(build(k, ""))
        raise CpbenchError(f"item {item.id!r} of task {spec.name!r} needs {n_min} tokens without demonstrations "
                           f"and context, over the budget of {max_tokens}; raise max_tokens")
    while lo < hi:
        mid = (lo + hi) // 2
        if count(build(k, item.context[starts[mid]:])) <= max_tokens:
            hi = mid
        else:
            lo = mid + 1
    ctx = item.context[starts[lo]:]
    return k, ctx, build(k, ctx)


def build_prompts(spec: TaskSpec, items: Sequence[Item], method: str = "base", shots: int = 0, chat: str = "none",
                  tokenizer: Any = None, max_tokens: Optional[int] = None) -> list[Prompt]:
    """Prompts for the evaluation items (demonstrations and `exclude_from_evaluation` ids left out).

    With `tokenizer` and `max_tokens`, a prompt over budget loses its oldest demonstrations first, then the left of
    its context; `prefix` is then the part all prompts still share.
    """
    if method not in METHODS:
        raise CpbenchError(f"unknown prompt method {method!r} (use one of {', '.join(METHODS)})")
    if chat not in CHATS:
        raise CpbenchError(f"unknown chat mode {chat!r} (use one of {', '.join(CHATS)})")
    if not isinstance(shots, int) or shots < 0:
        raise CpbenchError(f"shots must be a non-negative integer, got {shots!r}")
    if chat == "v1" and tokenizer is None:
        raise CpbenchError("chat v1 needs the model's tokenizer (its chat template)")
    if max_tokens is not None and (tokenizer is None or max_tokens < 1):
        raise CpbenchError("max_tokens needs a tokenizer and a positive budget")

    demos = demonstrations(spec, items, shots)
    excluded = {str(i) for i in spec.demonstrations.exclude_from_evaluation} | {str(d.id) for d in demos}
    targets = [it for it in items if str(it.id) not in excluded]
    if not targets:
        raise CpbenchError(f"task {spec.name!r}: no items left to evaluate after excluding ids {sorted(excluded)}")

    label = spec.context_label
    head, tail = frame(spec, method, shots)
    demo_texts = [format_item(d, label, with_answer=True) for d in demos]
    render: Callable[[str], str] = _chat_renderer(tokenizer) if chat == "v1" else (lambda s: s)
    count = _token_counter(tokenizer) if max_tokens is not None else None

    rows = []
    for item in targets:
        if count is not None:
            k, ctx, text = _fit(item, spec, head, demo_texts, tail, render, count, max_tokens)
        else:
            k, ctx = 0, item.context
            text = render(head + "".join(demo_texts) + tail + format_item(item, label))
        rows.append((item, k, ctx, text))

    dropped = {k for _, k, _, _ in rows}
    shared_raw = head + "".join(demo_texts[dropped.pop():]) + tail if len(dropped) == 1 else head
    prefix = _render_prefix(shared_raw, render) if chat == "v1" else shared_raw
    texts = [r[3] for r in rows]
    if not all(t.startswith(prefix) for t in texts):  # a template that rewrites content: fall back to the common text
        prefix = os.path.commonprefix(texts)
    # End the prefix at its last non-whitespace character: BPE tokenizers merge a run of newlines with what follows,
    # so a prefix ending in "\n\n" would not tokenize as a prefix of the prompt's tokens.
    prefix = prefix.rstrip()
    n_cut = sum(1 for item, k, ctx, _ in rows if k or ctx != item.context)
    if n_cut:
        log.warning("task %s: %d of %d prompts truncated to %d tokens", spec.name, n_cut, len(rows), max_tokens)

    return [
        Prompt(item_id=str(item.id), text=text, prefix=prefix, label=item.label, letters=list(LETTERS),
               options=[item.choices[letter] for letter in LETTERS], cloze_context=cloze_context(item, label, ctx),
               hash=text_hash(text))
        for item, _, ctx, text in rows
    ]


def _render_prefix(raw: str, render: Callable[[str], str]) -> str:
    """The chat-rendered text up to where the raw shared part ends: render it followed by a sentinel and cut."""
    rendered = render(raw + _SENTINEL)
    at = rendered.find(_SENTINEL)
    return rendered[:at] if at >= 0 else ""
