"""Shared pieces of the declarative-config loaders (models, recipes, suites): read a YAML mapping, reject unknown keys
with a "did you mean", and turn pydantic's multi-line errors into one line."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from cpbench.base.errors import CpbenchError


def did_you_mean(word: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> str:
    """'; did you mean 'x'?' (or "'x', 'y'?" for n > 1) naming the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=n, cutoff=cutoff)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def reject_unknown_keys(data: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise CpbenchError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}")


def first_error(exc: ValidationError) -> str:
    """The first pydantic error as 'field.path: message' on one line."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def read_yaml_mapping(path: Path, what: str, sections: tuple[str, ...]) -> dict[str, Any]:
    """Load `path` as a mapping whose top-level keys are among `sections`; one-line errors for everything else."""
    if not path.is_file():
        raise CpbenchError(f"{path}: {what} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CpbenchError(f"{path}: not valid YAML ({exc})") from None
    expected = " and ".join(repr(s) for s in sections)
    if not isinstance(raw, dict):
        raise CpbenchError(f"{path}: expected a YAML mapping with {expected}, got a {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - set(sections))
    if unknown:
        hint = did_you_mean(unknown[0], sections)
        raise CpbenchError(f"{path}: unknown top-level key(s) {unknown}; expected {expected}{hint}")
    return raw


def require_mapping_of_mappings(raw: dict[str, Any], section: str, path: Path, what: str) -> dict[str, Any]:
    body = raw.get(section) or {}
    if not isinstance(body, dict) or not all(isinstance(v, (dict, type(None))) for v in body.values()):
        raise CpbenchError(f"{path}: '{section}' must be a mapping of {what}")
    return body
