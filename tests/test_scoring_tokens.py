"""Option-letter token ids: Ye et al.'s last token of "Answer: A", verified single and distinct."""

from __future__ import annotations

import pytest
from scoring_fixtures import make_prompts, tiny

from cpbench.base.errors import CpbenchError
from cpbench.backends.tokens import check_prompt_continuation, form_for, resolve_option_tokens

LETTERS = list("ABCDEF")


def test_space_form_matches_ye_et_al_last_token():
    _, tok = tiny()
    opt = resolve_option_tokens(tok, LETTERS, "space")
    # Ye et al.: option_ids = [tokenizer.encode(opt)[-1] for opt in ["Answer: A", ...]]
    assert list(opt.ids) == [tok.encode(f"Answer: {L}")[-1] for L in LETTERS]
    assert [tok.decode([i]) for i in opt.ids] == [" " + L for L in LETTERS]
    assert len(set(opt.ids)) == 6


def test_bare_form_is_the_letter_without_space():
    _, tok = tiny()
    opt = resolve_option_tokens(tok, LETTERS, "bare")
    assert [tok.decode([i]) for i in opt.ids] == LETTERS
    assert set(opt.ids).isdisjoint(resolve_option_tokens(tok, LETTERS, "space").ids)


def test_form_follows_the_prompt_ending():
    _, tok = tiny()
    plain = make_prompts(4, shots=0)
    chat = make_prompts(4, shots=0, chat="v1", tokenizer=tok)
    assert form_for([p.text for p in plain]) == "space"
    assert form_for([p.text for p in chat]) == "bare"
    with pytest.raises(CpbenchError, match="whitespace"):
        form_for([plain[0].text, chat[0].text])


def test_real_prompts_continue_with_exactly_the_option_token():
    _, tok = tiny()
    for prompts in (make_prompts(3, shots=2), make_prompts(3, shots=0, chat="v1", tokenizer=tok)):
        opt = resolve_option_tokens(tok, LETTERS, form_for([p.text for p in prompts]))
        for p in prompts:
            check_prompt_continuation(tok, p.text, opt)  # raises on mismatch
            base = tok(p.text)["input_ids"]
            sep = " " if opt.form == "space" else ""
            for L, tid in zip(LETTERS, opt.ids):
                assert tok(p.text + sep + L)["input_ids"] == base + [tid]


def test_prompt_with_trailing_space_is_rejected():
    # "Answer: " + "A" merges into the " A" token: the bare letter id would never be emitted there.
    _, tok = tiny()
    text = make_prompts(1, shots=0)[0].text + " "
    opt = resolve_option_tokens(tok, LETTERS, form_for([text]))
    with pytest.raises(CpbenchError, match="tokenizes as"):
        check_prompt_continuation(tok, text, opt)


def test_multi_token_letters_fail_clearly():
    _, tok = tiny()
    with pytest.raises(CpbenchError, match="not a single token"):
        resolve_option_tokens(tok, ["A", "B", "Zqxj"], "space")


class _CollidingTokenizer:
    """Every letter is one token, but 'A' and 'B' share an id (a lossy vocabulary)."""

    name_or_path = "colliding"

    def _ids(self, text: str) -> list[int]:
        ids = [ord(c) for c in text]
        return [ord("A") if i == ord("B") else i for i in ids]

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": self._ids(text)}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def convert_ids_to_tokens(self, ids):
        return [chr(i) for i in ids]


def test_lossy_vocabulary_fails_clearly():
    # Two letters sharing an id means one of them decodes to the other letter: caught before scoring wrong ids.
    with pytest.raises(CpbenchError, match="decodes to 'A', not the letter 'B'"):
        resolve_option_tokens(_CollidingTokenizer(), ["A", "B"], "bare")


def test_provenance_names_ids_tokens_and_form():
    _, tok = tiny()
    prov = resolve_option_tokens(tok, LETTERS, "space").to_provenance()
    assert prov["letters"] == LETTERS and prov["form"] == "space" and len(prov["ids"]) == 6
    assert prov["probe"] == "Answer: <letter>"
