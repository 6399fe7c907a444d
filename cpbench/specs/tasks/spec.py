"""Find and validate the task definitions in `tasks/<name>.yaml`."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from cpbench.base.config import did_you_mean
from cpbench.base.errors import CpbenchError
from cpbench.base.paths import data_dir
from cpbench.specs.tasks.schema import TaskSpec, explain_validation_error

# Ye et al.'s order of the five tasks; other task files follow alphabetically.
CANONICAL_ORDER = ("qa", "rc", "ci", "drs", "ds")


def tasks_dir() -> Path:
    return data_dir("tasks")


def list_tasks(root: Path | None = None) -> list[str]:
    """Names of the task definitions (files `tasks/*.yaml`; names starting with `_` are not tasks)."""
    root = Path(root) if root is not None else tasks_dir()
    names = [p.stem for p in root.glob("*.yaml") if not p.stem.startswith("_")]
    rank = {n: i for i, n in enumerate(CANONICAL_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def load_task_file(path: str | Path) -> TaskSpec:
    """Validate one task YAML file; any problem is a one-line CpbenchError naming the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CpbenchError(f"{path}: cannot read task definition ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise CpbenchError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise CpbenchError(f"{path}: malformed YAML{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise CpbenchError(f"{path}: a task definition must be a YAML mapping, got {type(raw).__name__}")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        raise CpbenchError(explain_validation_error(exc, TaskSpec, str(path))) from None
    if spec.name != path.stem:
        raise CpbenchError(f"{path}: field 'name': {spec.name!r} does not match the file name {path.stem!r}")
    spec._path = str(path)
    return spec


def load_task(name: str, root: Path | None = None) -> TaskSpec:
    """The task called `name` (`tasks/<name>.yaml`), validated; unknown names get a did-you-mean."""
    root = Path(root) if root is not None else tasks_dir()
    path = root / f"{name}.yaml"
    if not path.is_file():
        known = list_tasks(root)
        raise CpbenchError(f"unknown task {name!r} (known: {', '.join(known)}){did_you_mean(name, known)}")
    return load_task_file(path)


def samples_path(spec: TaskSpec) -> Path:
    """The offline smoke-test item file of a task."""
    base = Path(spec.path).parent if spec.path else tasks_dir()
    return base / spec.samples
