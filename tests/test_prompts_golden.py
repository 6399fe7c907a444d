"""Golden prompts: exact strings for every (task format, method, zero/few-shot), written by hand from the format
of Ye et al.'s `generate_logits.py` (`format_example`, `format_{base,shared,task}_prompt`) and the instruction texts of
tasks/*.yaml. Nothing here is produced by the builder: a change to a prompt must show up as a failing test.

Format: `[Context|Dialogue|Document]: c\\n` (not for QA) `Question: q\\nChoices:\\n` six lines `L. text\\n`, then
`Answer:`; a demonstration adds ` X\\n`. Zero-shot instruction + `\\n\\n`; few-shot instruction + `\\n\\n` + demos +
`\\n` + closing line + `\\n\\n`; base few-shot is the demos alone.
"""

from __future__ import annotations

import hashlib

import pytest

from cpbench.specs.tasks import Item, build_prompts, load_task

EF = {"E": "I don't know", "F": "None of the above"}

# --- instruction texts, as written in tasks/*.yaml -----------------------------------------------------------------
SHARED_ZERO = ("Below is a multiple-choice question with six options, A to F. Exactly one option is correct. "
               "Choose it and reply with its letter only.")
SHARED_FEW = ("Here are examples of multiple-choice questions with six options, A to F. In each, exactly one option "
              "is correct.")
CLOSING = "Now answer the next question in the same way. Reply with the letter of the correct option only."
TASK_ZERO = {
    "qa": "Below is a multiple-choice question that tests world knowledge and problem solving. It has six options, "
          "A to F, and exactly one is correct. Choose it and reply with its letter only.",
    "rc": "Below is a reading comprehension question about a short passage. Use the passage, and commonsense where "
          "the passage is silent, to choose the one correct option among A to F. Reply with its letter only.",
    "ci": "Below is a commonsense inference question: given the start of a scene, choose the option, among A to F, "
          "that most plausibly continues it. Reply with its letter only.",
    "drs": "Below is a dialogue response selection question: given a conversation, choose the option, among A to F, "
           "that is the most fitting next reply and is factually correct, with no invented information. Reply with "
           "its letter only.",
    "ds": "Below is a document summarization question: given a document, choose the option, among A to F, that "
          "summarizes it accurately, with no information that the document does not support. Reply with its letter "
          "only.",
}
TASK_FEW = {
    "qa": "Here are examples of multiple-choice questions that test world knowledge and problem solving. Each has six "
          "options, A to F, and exactly one correct answer.",
    "rc": "Here are examples of reading comprehension questions about short passages. Each is answered from the "
          "passage, with commonsense where the passage is silent; exactly one of the six options is correct.",
    "ci": "Here are examples of commonsense inference questions. In each, the answer is the option that most "
          "plausibly continues the given scene.",
    "drs": "Here are examples of dialogue response selection questions. In each, the answer is the most fitting next "
           "reply to the conversation that is also factually correct, with no invented information.",
    "ds": "Here are examples of document summarization questions. In each, the answer is the option that summarizes "
          "the document accurately, with no information that the document does not support.",
}


def item(i, question, a, b, c, d, answer, context=""):
    return Item(id=i, source="test", context=context, question=question,
                choices={"A": a, "B": b, "C": c, "D": d} | EF, answer=answer)


# --- items and their exact renderings, per task format ------------------------------------------------------------
# Each task: the evaluated item (id 0), its rendering, and the demonstrations used with `shots` (first ids of the
# task's list: qa/rc/ci 1,3; drs 5,7; ds 9), each rendered with its answer.
CASES = {
    "qa": {
        "shots": 2,
        "items": [item(0, "What is 2 + 2?", "3", "4", "5", "22", "B"),
               item(1, "Capital of France?", "Paris", "Rome", "Oslo", "Bern", "A"),
               item(3, "Colour of a clear sky?", "Green", "Red", "Blue", "Black", "C")],
        "test": "Question: What is 2 + 2?\nChoices:\nA. 3\nB. 4\nC. 5\nD. 22\nE. I don't know\n"
             "F. None of the above\nAnswer:",
        "demos": "Question: Capital of France?\nChoices:\nA. Paris\nB. Rome\nC. Oslo\nD. Bern\nE. I don't know\n"
              "F. None of the above\nAnswer: A\n"
              "Question: Colour of a clear sky?\nChoices:\nA. Green\nB. Red\nC. Blue\nD. Black\nE. I don't know\n"
              "F. None of the above\nAnswer: C\n",
        "cloze": "Question: What is 2 + 2?\nAnswer:",
    },
    "rc": {
        "shots": 2,
        "items": [item(0, "Why was he wet?", "It rained.", "He sang.", "It was sunny.", "He slept.", "A",
                    context="Tom walked home without an umbrella."),
               item(1, "Who won?", "Ann", "Bob", "Cy", "Di", "D", context="Di won the race."),
               item(3, "Where is the cat?", "Roof", "Sofa", "Car", "Box", "B", context="The cat sleeps on the sofa.")],
        "test": "Context: Tom walked home without an umbrella.\nQuestion: Why was he wet?\nChoices:\nA. It rained.\n"
             "B. He sang.\nC. It was sunny.\nD. He slept.\nE. I don't know\nF. None of the above\nAnswer:",
        "demos": "Context: Di won the race.\nQuestion: Who won?\nChoices:\nA. Ann\nB. Bob\nC. Cy\nD. Di\n"
              "E. I don't know\nF. None of the above\nAnswer: D\n"
              "Context: The cat sleeps on the sofa.\nQuestion: Where is the cat?\nChoices:\nA. Roof\nB. Sofa\n"
              "C. Car\nD. Box\nE. I don't know\nF. None of the above\nAnswer: B\n",
        "cloze": "Context: Tom walked home without an umbrella.\nQuestion: Why was he wet?\nAnswer:",
    },
    "ci": {
        "shots": 2,
        "items": [item(0, "Which option is the most plausible continuation of the context?", "eats the ball.",
                    "kicks the ball.", "paints the sky.", "sells the field.", "B",
                    context="A boy runs up to a football and"),
               item(1, "Which option is the most plausible continuation of the context?", "sleeps.", "drinks it.",
                    "pours tea.", "flies.", "C", context="She lifts the teapot and"),
               item(3, "Which option is the most plausible continuation of the context?", "claps.", "swims.",
                    "bakes.", "skis.", "A", context="The crowd cheers and")],
        "test": "Context: A boy runs up to a football and\nQuestion: Which option is the most plausible continuation of "
             "the context?\nChoices:\nA. eats the ball.\nB. kicks the ball.\nC. paints the sky.\nD. sells the "
             "field.\nE. I don't know\nF. None of the above\nAnswer:",
        "demos": "Context: She lifts the teapot and\nQuestion: Which option is the most plausible continuation of the "
              "context?\nChoices:\nA. sleeps.\nB. drinks it.\nC. pours tea.\nD. flies.\nE. I don't know\n"
              "F. None of the above\nAnswer: C\n"
              "Context: The crowd cheers and\nQuestion: Which option is the most plausible continuation of the "
              "context?\nChoices:\nA. claps.\nB. swims.\nC. bakes.\nD. skis.\nE. I don't know\n"
              "F. None of the above\nAnswer: A\n",
        "cloze": "Context: A boy runs up to a football and\nQuestion: Which option is the most plausible continuation "
              "of the context?\nAnswer:",
    },
    "drs": {
        "shots": 2,
        "items": [item(0, "Which response is the most suitable next reply in the dialogue?", "Paris.", "Rome.",
                    "I like tea.", "Blue.", "A", context="[Human]: What is the capital of France?"),
               item(5, "Which response is the most suitable next reply in the dialogue?", "Two.", "Four.", "Cats.",
                    "Seven.", "B", context="[Human]: How many legs does a dog have? [Assistant]: Let me think."),
               item(7, "Which response is the most suitable next reply in the dialogue?", "Yes.", "Mars.", "No.",
                    "Water boils at 100 C.", "D", context="[Human]: At what temperature does water boil?")],
        "test": "Dialogue: [Human]: What is the capital of France?\nQuestion: Which response is the most suitable next "
             "reply in the dialogue?\nChoices:\nA. Paris.\nB. Rome.\nC. I like tea.\nD. Blue.\nE. I don't know\n"
             "F. None of the above\nAnswer:",
        "demos": "Dialogue: [Human]: How many legs does a dog have? [Assistant]: Let me think.\nQuestion: Which "
              "response is the most suitable next reply in the dialogue?\nChoices:\nA. Two.\nB. Four.\nC. Cats.\n"
              "D. Seven.\nE. I don't know\nF. None of the above\nAnswer: B\n"
              "Dialogue: [Human]: At what temperature does water boil?\nQuestion: Which response is the most "
              "suitable next reply in the dialogue?\nChoices:\nA. Yes.\nB. Mars.\nC. No.\nD. Water boils at 100 C.\n"
              "E. I don't know\nF. None of the above\nAnswer: D\n",
        "cloze": "Dialogue: [Human]: What is the capital of France?\nQuestion: Which response is the most suitable next "
              "reply in the dialogue?\nAnswer:",
    },
    "ds": {
        "shots": 1,
        "items": [item(0, "Which summary describes the document accurately?", "A dog was found.", "A cat won.",
                    "Rain fell.", "A dog was lost forever.", "A",
                    context="A lost dog was found by a hiker.\nIts family was happy."),
               item(9, "Which summary describes the document accurately?", "Bus fares rise.", "Buses are free.",
                    "Trains stop.", "A zoo opened.", "B", context="Buses will be free for children.")],
        "test": "Document: A lost dog was found by a hiker.\nIts family was happy.\nQuestion: Which summary describes "
             "the document accurately?\nChoices:\nA. A dog was found.\nB. A cat won.\nC. Rain fell.\nD. A dog was "
             "lost forever.\nE. I don't know\nF. None of the above\nAnswer:",
        "demos": "Document: Buses will be free for children.\nQuestion: Which summary describes the document "
              "accurately?\nChoices:\nA. Bus fares rise.\nB. Buses are free.\nC. Trains stop.\nD. A zoo opened.\n"
              "E. I don't know\nF. None of the above\nAnswer: B\n",
        "cloze": "Document: A lost dog was found by a hiker.\nIts family was happy.\nQuestion: Which summary describes "
              "the document accurately?\nAnswer:",
    },
}


def expected(task: str, method: str, few: bool) -> tuple[str, str]:
    """(text, shared part) from the format spec; `Prompt.prefix` is the shared part without trailing whitespace."""
    case = CASES[task]
    if method == "base":
        prefix = case["demos"] if few else ""
    else:
        zero, fewtext = (SHARED_ZERO, SHARED_FEW) if method == "shared" else (TASK_ZERO[task], TASK_FEW[task])
        prefix = fewtext + "\n\n" + case["demos"] + "\n" + CLOSING + "\n\n" if few else zero + "\n\n"
    return prefix + case["test"], prefix


@pytest.mark.parametrize("few", [False, True], ids=["zero", "few"])
@pytest.mark.parametrize("method", ["base", "shared", "task"])
@pytest.mark.parametrize("task", ["qa", "rc", "ci", "drs", "ds"])
def test_golden(task, method, few):
    case = CASES[task]
    prompts = build_prompts(load_task(task), case["items"], method=method, shots=case["shots"] if few else 0)
    assert [p.item_id for p in prompts] == ["0"]  # demonstration ids are never evaluated
    p = prompts[0]
    text, prefix = expected(task, method, few)
    assert p.text == text
    assert p.prefix == prefix.rstrip()
    assert p.cloze_context == case["cloze"]
    assert p.options == [case["items"][0].choices[k] for k in "ABCDEF"]
    assert p.letters == list("ABCDEF") and p.label == "ABCDEF".index(case["items"][0].answer)
    assert p.hash == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --- the QA cases once more as complete literals, so that the separators are checked character by character --------
QA_LITERAL = {
    ("base", False): "Question: What is 2 + 2?\nChoices:\nA. 3\nB. 4\nC. 5\nD. 22\nE. I don't know\n"
                     "F. None of the above\nAnswer:",
    ("base", True): "Question: Capital of France?\nChoices:\nA. Paris\nB. Rome\nC. Oslo\nD. Bern\nE. I don't know\n"
                    "F. None of the above\nAnswer: A\nQuestion: Colour of a clear sky?\nChoices:\nA. Green\nB. Red\n"
                    "C. Blue\nD. Black\nE. I don't know\nF. None of the above\nAnswer: C\nQuestion: What is 2 + 2?\n"
                    "Choices:\nA. 3\nB. 4\nC. 5\nD. 22\nE. I don't know\nF. None of the above\nAnswer:",
    ("shared", False): "Below is a multiple-choice question with six options, A to F. Exactly one option is correct. "
                       "Choose it and reply with its letter only.\n\nQuestion: What is 2 + 2?\nChoices:\nA. 3\nB. 4\n"
                       "C. 5\nD. 22\nE. I don't know\nF. None of the above\nAnswer:",
    ("shared", True): "Here are examples of multiple-choice questions with six options, A to F. In each, exactly one "
                      "option is correct.\n\nQuestion: Capital of France?\nChoices:\nA. Paris\nB. Rome\nC. Oslo\n"
                      "D. Bern\nE. I don't know\nF. None of the above\nAnswer: A\nQuestion: Colour of a clear sky?\n"
                      "Choices:\nA. Green\nB. Red\nC. Blue\nD. Black\nE. I don't know\nF. None of the above\n"
                      "Answer: C\n\nNow answer the next question in the same way. Reply with the letter of the "
                      "correct option only.\n\nQuestion: What is 2 + 2?\nChoices:\nA. 3\nB. 4\nC. 5\nD. 22\n"
                      "E. I don't know\nF. None of the above\nAnswer:",
    ("task", False): "Below is a multiple-choice question that tests world knowledge and problem solving. It has six "
                     "options, A to F, and exactly one is correct. Choose it and reply with its letter only.\n\n"
                     "Question: What is 2 + 2?\nChoices:\nA. 3\nB. 4\nC. 5\nD. 22\nE. I don't know\n"
                     "F. None of the above\nAnswer:",
    ("task", True): "Here are examples of multiple-choice questions that test world knowledge and problem solving. "
                    "Each has six options, A to F, and exactly one correct answer.\n\nQuestion: Capital of France?\n"
                    "Choices:\nA. Paris\nB. Rome\nC. Oslo\nD. Bern\nE. I don't know\nF. None of the above\n"
                    "Answer: A\nQuestion: Colour of a clear sky?\nChoices:\nA. Green\nB. Red\nC. Blue\nD. Black\n"
                    "E. I don't know\nF. None of the above\nAnswer: C\n\nNow answer the next question in the same "
                    "way. Reply with the letter of the correct option only.\n\nQuestion: What is 2 + 2?\nChoices:\n"
                    "A. 3\nB. 4\nC. 5\nD. 22\nE. I don't know\nF. None of the above\nAnswer:",
}


@pytest.mark.parametrize("method, few", list(QA_LITERAL))
def test_qa_complete_literals(method, few):
    p = build_prompts(load_task("qa"), CASES["qa"]["items"], method=method, shots=2 if few else 0)[0]
    assert p.text == QA_LITERAL[(method, few)]


def test_all_demonstrations_in_task_order():
    """shots = the full list (Ye et al.'s few-shot setting): qa uses ids 1,3,5,7,9 in that order."""
    items = [item(i, f"Q{i}?", f"a{i}", f"b{i}", f"c{i}", f"d{i}", "ABCD"[i % 4]) for i in range(12)]
    p = build_prompts(load_task("qa"), items, method="base", shots=5)
    assert [x.item_id for x in p] == ["0", "2", "4", "6", "8", "10", "11"]
    demo_questions = [line for line in p[0].prefix.split("\n") if line.startswith("Question:")]
    assert demo_questions == ["Question: Q1?", "Question: Q3?", "Question: Q5?", "Question: Q7?", "Question: Q9?"]
    assert p[0].prefix.endswith("Answer: B")  # id 9 -> "ABCD"[1]; trailing newline left to the text


def test_zero_shot_still_excludes_the_demonstration_ids():
    items = [item(i, f"Q{i}?", f"a{i}", f"b{i}", f"c{i}", f"d{i}", "A") for i in range(11)]
    for task in ("qa", "drs", "ds"):
        ids = [p.item_id for p in build_prompts(load_task(task), items)]
        assert ids == ["0", "2", "4", "6", "8", "10"]


def test_string_ids_and_id_5_in_ds():
    """ds uses only demo 9 but still never evaluates 1,3,5,7,9 (Ye et al. remove them for every task)."""
    items = [item(i, f"Q{i}?", f"a{i}", f"b{i}", f"c{i}", f"d{i}", "A", context="doc") for i in range(10)]
    items.append(item("extra-1", "Qx?", "w", "x", "y", "z", "D", context="doc"))
    p = build_prompts(load_task("ds"), items, method="task", shots=1)
    assert [x.item_id for x in p] == ["0", "2", "4", "6", "8", "extra-1"]
