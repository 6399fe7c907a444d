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

import bisect
import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cpbench.base.errors import CpbenchError
from cpbench.specs.tasks.schema import LETTERS, Item, TaskSpec

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
        h.update(f"{p.item_id}\t{p.hash}\n".encode())
    return "sha256:" + h.hexdigest()


def item_header(item: Item, context_label: str | None, context: str | None = None) -> str:
    """`Context: ...\\nQuestion: ...\\n` (or just the question line for QA)."""
    ctx = item.context if context is None else context
    head = f"{context_label}: {ctx}\n" if context_label else ""
    return head + f"Question: {item.question}\n"


def format_item(item: Item, context_label: str | None, with_answer: bool = False,
                context: str | None = None) -> str:
    """One item in Ye et al.'s format; a demonstration (`with_answer`) ends with ` {answer}\\n`."""
    text = item_header(item, context_label, context) + "Choices:\n"
    text += "".join(f"{letter}. {item.choices[letter]}\n" for letter in LETTERS)
    text += "Answer:"
    return (text + f" {item.answer}\n") if with_answer else text


def cloze_context(item: Item, context_label: str | None, context: str | None = None) -> str:
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


class _ChatRenderer:
    """One user message through the tokenizer's chat template (`add_generation_prompt=True`).

    The template is rendered once around a sentinel; later calls splice the content between the rendered head and
    tail, which is the same string without a Jinja render per call. The first call checks that splicing reproduces
    the template's own output (and `build_prompts` checks the last prompt again); a template that rewrites the
    content (e.g. `| trim` on content with outer whitespace) is rendered in full every time.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        probe = self.full(_SENTINEL)
        at = probe.find(_SENTINEL)
        self.parts = (probe[:at], probe[at + len(_SENTINEL):]) if at >= 0 else None
        self.splice_ok: bool | None = None if self.parts else False

    def full(self, content: str) -> str:
        try:
            out = self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                     add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - no template, template error: one line
            raise CpbenchError(f"chat v1 needs a tokenizer with a chat template ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); use chat v2 or none") from None
        if not isinstance(out, str):
            raise CpbenchError("tokenizer.apply_chat_template(tokenize=False) did not return a string")
        return out

    def __call__(self, content: str) -> str:
        if self.splice_ok is False or self.parts is None:
            return self.full(content)
        spliced = self.parts[0] + content + self.parts[1]
        if self.splice_ok is None:
            out = self.full(content)
            self.splice_ok = out == spliced
            return out
        return spliced


def _token_counter(tokenizer: Any) -> Callable[[str], int]:
    # Counted the way the text is fed to the model (the tokenizer's defaults, as in Ye et al.'s scripts).
    return lambda text: len(tokenizer(text)["input_ids"])


def _fit(item: Item, spec: TaskSpec, head: str, demo_texts: list[str], demo_counts: list[int], tail: str,
         render: Callable[[str], str], count: Callable[[str], int], max_tokens: int) -> tuple[int, str, str]:
    """(demos dropped, context used, text) within the budget: drop the fewest oldest demonstrations, then cut the
    fewest leading words of the item's context; the question, options and `Answer:` are never cut.

    Token counts are assumed to grow with the text (true of real tokenizers up to a token at a boundary). Searches
    start from estimates (per-demonstration token counts, characters per token of the context) and are confirmed by
    exact counts of the full text, so a 10,000-item build costs a few tokenizations per prompt, not dozens.
    """
    label = spec.context_label
    full_ctx = item.context
    memo: dict[tuple[int, int], tuple[str, int]] = {}

    def measure(k: int, cut: int) -> tuple[str, int]:
        if (k, cut) not in memo:
            text = render(head + "".join(demo_texts[k:]) + tail + format_item(item, label, context=full_ctx[cut:]))
            memo[(k, cut)] = (text, count(text))
        return memo[(k, cut)]

    text, n = measure(0, 0)
    if n <= max_tokens:
        return 0, full_ctx, text
    # 1. Demonstrations, oldest first: jump to the first k whose estimate fits, confirm, then make sure k is minimal.
    k_fail, k = 0, 0
    while k < len(demo_texts):
        est, k_next = n, k
        while k_next < len(demo_texts) and est > max_tokens:
            est -= demo_counts[k_next]
            k_next += 1
        text, n_next = measure(k_next, 0)
        if n_next <= max_tokens:
            while k_next - 1 > k_fail and measure(k_next - 1, 0)[1] <= max_tokens:
                k_next -= 1
            return k_next, full_ctx, measure(k_next, 0)[0]
        k_fail, k, n = k_next, k_next, n_next
    k = len(demo_texts)
    # 2. Context, from the left at word starts: the fewest leading words to drop.
    starts = [m.start() for m in re.finditer(r"\S+", full_ctx)] + [len(full_ctx)]
    last = len(starts) - 1  # index of the empty context
    n_empty = measure(k, starts[last])[1] if last >= 1 else n
    if last < 1 or n_empty > max_tokens:
        raise CpbenchError(f"item {item.id!r} of task {spec.name!r} needs {n_empty} tokens without demonstrations "
                           f"and context, over the budget of {max_tokens}; raise max_tokens")

    def fits(j: int) -> bool:
        return measure(k, starts[j])[1] <= max_tokens

    chars_per_token = len(full_ctx) / max(1, n - n_empty)
    j0 = min(max(bisect.bisect_left(starts, (n - max_tokens) * chars_per_token), 1), last)
    fail, fit = 0, last  # j = 0 (whole context) does not fit; j = last (empty context) does
    step = 1
    if fits(j0):
        fit = j0
        while fit - step > fail:  # gallop towards longer contexts until one does not fit
            if fits(fit - step):
                fit, step = fit - step, step * 2
            else:
                fail = fit - step
                break
    else:
        fail = j0
        while fail + step < fit:  # gallop towards shorter contexts until one fits
            if fits(fail + step):
                fit = fail + step
                break
            fail, step = fail + step, step * 2
    while fit - fail > 1:
        mid = (fail + fit) // 2
        if fits(mid):
            fit = mid
        else:
            fail = mid
    return k, full_ctx[starts[fit]:], measure(k, starts[fit])[0]


def build_prompts(spec: TaskSpec, items: Sequence[Item], method: str = "base", shots: int = 0, chat: str = "none",
                  tokenizer: Any = None, max_tokens: int | None = None) -> list[Prompt]:
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
    chat_render = _ChatRenderer(tokenizer) if chat == "v1" else None
    render: Callable[[str], str] = chat_render if chat_render is not None else (lambda s: s)
    count = _token_counter(tokenizer) if max_tokens is not None else None
    demo_counts = [count(t) for t in demo_texts] if count is not None else []

    def raw(item: Item, k: int, ctx: str) -> str:
        return head + "".join(demo_texts[k:]) + tail + format_item(item, label, context=ctx)

    def build_rows() -> list[tuple[Item, int, str, str]]:
        rows = []
        for item in targets:
            if count is not None:
                rows.append((item, *_fit(item, spec, head, demo_texts, demo_counts, tail, render, count, max_tokens)))
            else:
                rows.append((item, 0, item.context, render(raw(item, 0, item.context))))
        return rows

    rows = build_rows()
    if chat_render is not None and chat_render.splice_ok:
        item, k, ctx, text = rows[-1]
        if chat_render.full(raw(item, k, ctx)) != text:  # splicing was not faithful after all: render in full
            chat_render.splice_ok = False
            rows = build_rows()

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
