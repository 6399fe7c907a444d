"""Seeded six-option construction from the original datasets.

From the rows of the original dataset (all configured splits, in stored order):
1. drop rows that cannot make a valid item (bad label, empty or duplicate option, an option that collides with the
   fixed E/F options or matches `exclude_options_matching`), counting each reason;
2. draw `count` rows (or all valid rows, if fewer) without replacement with `numpy.random.default_rng(seed)`;
3. four content options: the given four (kind `choices`), or the right and the hallucinated response plus two
   responses drawn from other rows (kind `halueval`);
4. place the right option at a letter from a seeded permutation of A,B,C,D repeated (so the answer letters are
   balanced to within one item), the other three in seeded random order, then E "I don't know", F "None of the above".
Item ids are 0..n-1 in draw order, like Ye et al.'s prepared files (so the demonstration ids 1,3,5,7,9 exist).
The same rows, spec and seed always give the same items.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cpbench.base.errors import CpbenchError
from cpbench.specs.tasks.schema import (
    CONTENT_LETTERS,
    FIXED_OPTIONS,
    LETTERS,
    Item,
    OriginalSource,
    TaskSpec,
    normalize_option,
)

_FIXED_KEYS = {normalize_option(t) for t in FIXED_OPTIONS.values()}


@dataclass
class BuildReport:
    """What the construction did: rows seen, rows dropped by reason, items made, answer letters."""

    rows: int = 0
    valid: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    items: int = 0
    letters: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "valid": self.valid, "dropped": dict(self.dropped), "items": self.items,
                "answer_letters": dict(self.letters)}


def letter_distribution(items: Sequence[Item]) -> dict[str, int]:
    """Count of gold answer letters, A-F in order (zeros included)."""
    counts = Counter(it.answer for it in items)
    return {letter: counts.get(letter, 0) for letter in LETTERS}


def clean_hellaswag(text: str) -> str:
    """Remove WikiHow markup from HellaSwag text: ` [title]` ends a sentence, other `[tags]` go, spaces collapse."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return " ".join(text.split())


def _strip(value: Any) -> str:
    """Context and question text: kept as published, only outer whitespace removed."""
    return "" if value is None else str(value).strip()


def _one_line(value: Any) -> str:
    """Option text: the prompt lists one option per line, so runs of whitespace (newlines included) become a space."""
    return "" if value is None else " ".join(str(value).split())


def _label(value: Any, n_options: int) -> int | None:
    """0-based label from an int or a digit string (HellaSwag stores "0".."3"; unlabelled test rows have "")."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        idx = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        idx = int(value.strip())
    else:
        return None
    return idx if 0 <= idx < n_options else None


def _column(columns: dict[str, list], name: str, where: str) -> list:
    if name not in columns:
        raise CpbenchError(f"{where}: column {name!r} not in the dataset (has: {', '.join(columns)})")
    return columns[name]


def _option_problem(options: Sequence[str], exclude: re.Pattern | None) -> str | None:
    """Why these content options cannot make an item, or None."""
    keys = [normalize_option(o) for o in options]
    if any(not k for k in keys):
        return "empty option"
    if len(set(keys)) != len(keys):
        return "duplicate option"
    if any(k in _FIXED_KEYS for k in keys):
        return "option equals E/F text"
    if exclude is not None and any(exclude.search(o) for o in options):
        return "option matches exclude_options_matching"
    return None


def _assemble(spec: TaskSpec, rng: np.random.Generator, rows: list[dict[str, Any]],
              contents: list[list[str]]) -> list[Item]:
    """Place the right option (contents[i][0]) at balanced seeded letters, the wrong ones in seeded order."""
    n = len(rows)
    targets = rng.permutation(np.arange(n) % len(CONTENT_LETTERS))
    wrong_order = np.argsort(rng.random((n, len(CONTENT_LETTERS) - 1)), axis=1)
    items = []
    for i, (row, opts) in enumerate(zip(rows, contents)):
        wrong = [opts[1 + j] for j in wrong_order[i]]
        ordered = wrong[: targets[i]] + [opts[0]] + wrong[targets[i]:]
        choices = dict(zip(CONTENT_LETTERS, ordered)) | FIXED_OPTIONS
        items.append(Item(id=i, source=spec.source_label, context=row["context"], question=row["question"],
                          choices=choices, answer=CONTENT_LETTERS[targets[i]], meta=row["meta"]))
    return items


def construct_items(spec: TaskSpec, columns: dict[str, list], origin: Sequence[tuple[str, int]],
                    where: str = "") -> tuple[list[Item], BuildReport]:
    """Six-option items from the original dataset's columns (`origin[r]` = (split, row) of row r)."""
    src: OriginalSource = spec.original
    fm = src.fields
    where = where or src.path
    n_rows = len(origin)
    hellaswag = src.clean == "hellaswag"
    clean_text = clean_hellaswag if hellaswag else _strip
    clean_option = clean_hellaswag if hellaswag else _one_line
    exclude = re.compile(src.exclude_options_matching, re.IGNORECASE) if src.exclude_options_matching else None

    ctx_col = _column(columns, fm.context, where) if fm.context else [""] * n_rows
    q_col = _column(columns, fm.question, where) if fm.question else [src.question_text] * n_rows
    meta_cols = {name: _column(columns, name, where) for name in fm.meta}

    report = BuildReport(rows=n_rows)
    dropped: Counter = Counter()
    rows: list[dict[str, Any]] = []
    contents: list[list[str]] = []  # right option first
    if src.kind == "choices":
        if isinstance(fm.choices, list):
            option_cols = [_column(columns, c, where) for c in fm.choices]
            options_per_row = [list(t) for t in zip(*option_cols)] if option_cols else []
        else:
            options_per_row = _column(columns, fm.choices, where)
        label_col = _column(columns, fm.label, where)
        for r in range(n_rows):
            options = [clean_option(o) for o in (options_per_row[r] or [])]
            if len(options) != len(CONTENT_LETTERS):
                dropped[f"not {len(CONTENT_LETTERS)} options"] += 1
                continue
            label = _label(label_col[r], len(options))
            if label is None:
                dropped["missing or invalid label"] += 1
                continue
            problem = _option_problem(options, exclude)
            if problem:
                dropped[problem] += 1
                continue
            rows.append({"r": r, "context": clean_text(ctx_col[r]), "question": _strip(q_col[r])})
            contents.append([options[label]] + options[:label] + options[label + 1:])
    else:
        right_col = _column(columns, fm.right, where)
        wrong_col = _column(columns, fm.hallucinated, where)
        for r in range(n_rows):
            pair = [clean_option(right_col[r]), clean_option(wrong_col[r])]
            problem = _option_problem(pair, exclude)
            context = clean_text(ctx_col[r])
            if problem is None and not context:
                problem = "empty context"
            if problem:
                dropped[problem] += 1
                continue
            rows.append({"r": r, "context": context, "question": _strip(q_col[r])})
            contents.append(pair)

    report.valid = len(rows)
    report.dropped = dict(sorted(dropped.items()))
    if not rows:
        raise CpbenchError(f"{where}: no row of the original dataset makes a valid six-option item "
                           f"(dropped: {report.dropped})")
    rng = np.random.default_rng(spec.seed)
    m = min(spec.count, len(rows))
    chosen = rng.choice(len(rows), size=m, replace=False)
    if src.kind == "halueval":
        picked = _halueval_contents(rng, contents, chosen)
    else:
        picked = [contents[j] for j in chosen]
    sel_rows = []
    for j in chosen:
        row = rows[j]
        split, idx = origin[row["r"]]
        meta = {"split": split, "row": int(idx)} | {k: meta_cols[k][row["r"]] for k in fm.meta}
        sel_rows.append({"context": row["context"], "question": row["question"], "meta": meta})
    items = _assemble(spec, rng, sel_rows, picked)
    report.items = len(items)
    report.letters = letter_distribution(items)
    return items, report


def _halueval_contents(rng: np.random.Generator, pairs: list[list[str]], chosen: np.ndarray) -> list[list[str]]:
    """[right, hallucinated, d1, d2] for each chosen row; d1, d2 drawn from the responses of other rows.

    Draws are vectorised; the rare draw that repeats an option of the item (HaluEval repeats some responses across
    rows) is redrawn from the same generator, so the result stays a pure function of the seed.
    """
    pool = [p[k] for p in pairs for k in (0, 1)]  # response 2*row + 0 = right, + 1 = hallucinated
    pool_keys = [normalize_option(t) for t in pool]
    n_pool_rows = len(pairs)
    if n_pool_rows < 3:
        raise CpbenchError("HaluEval construction needs at least 3 valid rows to draw two distractors")
    draws = rng.integers(0, 2 * n_pool_rows, size=(len(chosen), 2))
    out = []
    for i, j in enumerate(chosen):
        own = [pairs[j][0], pairs[j][1]]
        keys = {normalize_option(t) for t in own}
        picked: list[str] = []
        for d in draws[i]:
            d = int(d)
            while d // 2 == j or pool_keys[d] in keys:
                d = int(rng.integers(0, 2 * n_pool_rows))
            keys.add(pool_keys[d])
            picked.append(pool[d])
        out.append(own + picked)
    return out
