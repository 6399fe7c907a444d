"""Left truncation to a token budget, and properties of every build.

A word-level tokenizer (one token per whitespace-separated word) makes the budgets countable by hand.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbench.base.errors import CpbenchError
from cpbench.specs.tasks import Item, build_prompts, format_item, list_tasks, load_task

EF = {"E": "I don't know", "F": "None of the above"}


class WordTokenizer:
    """Duck-typed tokenizer: `tok(text)["input_ids"]`, one id per word."""

    def __call__(self, text):
        return {"input_ids": text.split()}


def words(text: str) -> int:
    return len(text.split())


def rc_item(i, context, answer="A"):
    return Item(id=i, context=context, question="Why?", choices={"A": "x", "B": "y", "C": "z", "D": "w"} | EF,
                answer=answer)


ITEMS = [rc_item(0, "one two three four five six seven eight nine ten"),
         rc_item(1, "first demo context here", "B"),
         rc_item(3, "second demo context", "C"),
         rc_item(2, "short")]
TASK = "rc"
# Word counts, by hand: an item block is "Context: <ctx>" + "Question: Why?" + "Choices:" + "A. x" .. "D. w" (8 words)
# + "E. I don't know" (4) + "F. None of the above" (5) + "Answer:" (1) = 1 + len(ctx) + 2 + 1 + 8 + 4 + 5 + 1.
BLOCK = 22
DEMO1 = "Context: first demo context here\nQuestion: Why?\nChoices:\nA. x\nB. y\nC. z\nD. w\nE. I don't know\n" \
        "F. None of the above\nAnswer: B\n"
DEMO3 = "Context: second demo context\nQuestion: Why?\nChoices:\nA. x\nB. y\nC. z\nD. w\nE. I don't know\n" \
        "F. None of the above\nAnswer: C\n"


def item_text(ctx: str) -> str:
    return f"Context: {ctx}\nQuestion: Why?\nChoices:\nA. x\nB. y\nC. z\nD. w\nE. I don't know\n" \
           "F. None of the above\nAnswer:"


def build(max_tokens, method="base", shots=2):
    return build_prompts(load_task(TASK), ITEMS, method=method, shots=shots, tokenizer=WordTokenizer(),
                         max_tokens=max_tokens)


def test_word_counts_by_hand():
    assert words(item_text("one two three four five six seven eight nine ten")) == BLOCK + 10
    assert words(DEMO1) == BLOCK + 4 + 1 and words(DEMO3) == BLOCK + 3 + 1


def test_budget_that_fits_changes_nothing():
    assert build(10_000) == build_prompts(load_task(TASK), ITEMS, method="base", shots=2)


def test_oldest_demonstration_goes_first():
    full = words(DEMO1) + words(DEMO3) + BLOCK + 10  # 27 + 26 + 32 = 85
    p0, p2 = build(full - 1)
    assert p0.text == DEMO3 + item_text("one two three four five six seven eight nine ten")
    assert p2.text == DEMO1 + DEMO3 + item_text("short")  # fits: untouched
    assert p0.prefix == p2.prefix == ""  # nothing is shared any more (base has no instruction)


def test_then_the_left_of_the_context_is_cut_at_word_starts():
    p0, p2 = build(BLOCK + 3)  # no demonstration fits; item 0 keeps its last 3 context words
    assert p0.text == item_text("eight nine ten")
    assert p2.text == item_text("short")
    assert p0.cloze_context == "Context: eight nine ten\nQuestion: Why?\nAnswer:"
    assert p0.options == ["x", "y", "z", "w", "I don't know", "None of the above"]


def test_instruction_and_closing_frame_stay_when_demonstrations_go():
    spec = load_task(TASK)
    head = spec.prompts.shared.few_shot + "\n\n"
    tail = "\n" + spec.prompts.closing + "\n\n"
    budget = words(head + DEMO1 + DEMO3 + tail) + BLOCK + 1  # item 2 ("short") fits whole; item 0 must shrink
    p0, p2 = build(budget, method="shared")
    assert p2.text == head + DEMO1 + DEMO3 + tail + item_text("short")
    # item 0 needs 9 more words: dropping the oldest demonstration (27 words) is enough, its context stays whole
    assert p0.text == head + DEMO3 + tail + item_text("one two three four five six seven eight nine ten")
    assert words(p0.text) <= budget
    assert p0.prefix == p2.prefix == spec.prompts.shared.few_shot  # the shared part: the instruction only


def test_impossible_budget_is_one_line():
    with pytest.raises(CpbenchError) as exc:
        build(BLOCK - 1)
    msg = str(exc.value)
    assert "\n" not in msg and "budget of 21" in msg and "item 0" in msg


def test_item_without_context_cannot_shrink():
    spec = load_task("qa")
    items = [Item(id=0, question="Long question " * 5, choices={"A": "a", "B": "b", "C": "c", "D": "d"} | EF,
                  answer="A")]
    with pytest.raises(CpbenchError, match="over the budget"):
        build_prompts(spec, items, tokenizer=WordTokenizer(), max_tokens=5)


# ----------------------------------------------------------------------------------------------- properties

texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda s: s.strip())


@st.composite
def task_items(draw):
    n = draw(st.integers(11, 16))
    items = []
    for i in range(n):
        opts = draw(st.lists(texts, min_size=4, max_size=4, unique_by=lambda s: " ".join(s.split()).casefold()
                             .rstrip(".").rstrip()))
        opts = [" ".join(o.split()) for o in opts]
        if {o.casefold().rstrip(".").rstrip() for o in opts} & {"i don't know", "none of the above"}:
            opts = [f"opt{i}{k}" for k in range(4)]
        items.append(Item(id=i, context=draw(texts), question=draw(texts),
                          choices=dict(zip("ABCD", opts)) | EF, answer=draw(st.sampled_from("ABCD"))))
    return items


@settings(max_examples=60, deadline=None)
@given(items=task_items(), task=st.sampled_from(["qa", "rc", "ci", "drs", "ds"]),
       method=st.sampled_from(["base", "shared", "task"]), data=st.data())
def test_build_properties(items, task, method, data):
    spec = load_task(task)
    shots = data.draw(st.integers(0, len(spec.demonstrations.ids)))
    prompts = build_prompts(spec, items, method=method, shots=shots)
    excluded = {"1", "3", "5", "7", "9"}
    assert [p.item_id for p in prompts] == [str(it.id) for it in items if str(it.id) not in excluded]
    assert len({p.prefix for p in prompts}) == 1
    by_id = {str(it.id): it for it in items}
    for p in prompts:
        it = by_id[p.item_id]
        block = format_item(it, spec.context_label)
        assert p.text.endswith(block) and p.text.endswith("\nAnswer:")
        shared = p.text[: len(p.text) - len(block)]
        assert p.prefix == shared.rstrip() and p.text.startswith(p.prefix)
        assert p.hash == "sha256:" + hashlib.sha256(p.text.encode()).hexdigest()
        assert p.cloze_context.endswith("Answer:") and "\nChoices:\n" not in p.cloze_context
        assert p.options[p.label] == it.choices[it.answer]
        assert shared.count("\nAnswer: ") == shots  # one answered demonstration per shot
    assert len({p.hash for p in prompts}) == len({p.text for p in prompts})


def test_every_shipped_task_builds_every_method_from_its_samples():
    from cpbench.specs.tasks import load_items, prompts_hash

    hashes = set()
    for name in list_tasks():
        spec = load_task(name)
        items = load_items(spec, "samples")
        for method in ("base", "shared", "task"):
            for shots in (0, len(spec.demonstrations.ids)):
                prompts = build_prompts(spec, items, method=method, shots=shots)
                assert len(prompts) == len(items) - 5
                hashes.add(prompts_hash(prompts))
    assert len(hashes) == 5 * 3 * 2  # every (task, method, shots) cell has its own prompts


@settings(max_examples=80, deadline=None)
@given(ctx_words=st.lists(st.sampled_from(["a", "bb", "c d", "e-f", "g\nh"]), min_size=0, max_size=60),
       demo_words=st.lists(st.integers(0, 40), min_size=5, max_size=5), budget=st.integers(15, 260),
       method=st.sampled_from(["base", "shared"]))
def test_truncation_is_minimal(ctx_words, demo_words, budget, method):
    """Same result as the brute force: the fewest oldest demonstrations dropped, then the fewest leading words."""
    spec = load_task("rc")
    context = " ".join(ctx_words)
    items = [rc_item(0, context)] + [rc_item(i, " ".join(["w"] * (n + 1)), "B")
                                     for i, n in zip((1, 3, 5, 7, 9), demo_words)]
    tok = WordTokenizer()
    head = spec.prompts.shared.few_shot + "\n\n" if method == "shared" else ""
    tail = "\n" + spec.prompts.closing + "\n\n" if method == "shared" else ""
    demos = [format_item(it, "Context", with_answer=True) for it in items[1:]]
    starts = [m.start() for m in re.finditer(r"\S+", context)] + [len(context)]
    candidates = [head + "".join(demos[k:]) + tail + item_text(context) for k in range(6)]
    candidates += [head + tail + item_text(context[s:]) for s in starts[1:]]
    expected = next((c for c in candidates if words(c) <= budget), None)
    if expected is None:
        with pytest.raises(CpbenchError, match="over the budget"):
            build_prompts(spec, items, method=method, shots=5, tokenizer=tok, max_tokens=budget)
        return
    (p,) = build_prompts(spec, items, method=method, shots=5, tokenizer=tok, max_tokens=budget)
    assert p.text == expected


def test_chat_template_that_rewrites_content_is_rendered_in_full():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    tok.chat_template = "{% for m in messages %}<u>{{ m['content'] | upper }}</u>{% endfor %}<a>"
    prompts = build_prompts(load_task(TASK), ITEMS, method="shared", shots=2, chat="v1", tokenizer=tok)
    assert prompts[0].text == "<u>" + build_prompts(load_task(TASK), ITEMS, method="shared", shots=2)[0].text.upper() \
        + "</u><a>"
    assert all(p.text.startswith(p.prefix) for p in prompts) and len({p.prefix for p in prompts}) == 1
