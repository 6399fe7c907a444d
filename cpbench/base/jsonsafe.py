"""Bounded JSON reading for files cpbench did not necessarily write (result records, importer inputs, headers).

`json.loads` alone turns hostile or damaged input into tracebacks: deeply nested arrays raise RecursionError, invalid
UTF-8 raises UnicodeDecodeError, a 5,000-digit integer raises ValueError, and `NaN` / `Infinity` literals load as
non-finite floats that JSON itself cannot represent. `loads` turns each into one CpbenchError line naming the file
(and line, for JSONL) and the problem, and caps the nesting depth of what it returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cpbench.base.errors import CpbenchError

MAX_DEPTH = 64  # records nest ~5 levels, importer inputs ~4; 64 leaves room and stays far from Python's recursion limit
MAX_BYTES = 256 * 2**20  # one result record is ~50 KB, an LLM-Uncertainty-Bench dataset JSON ~10 MB


def nesting_depth(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Depth of a parsed JSON value (a scalar is 0, [] is 1), iteratively; stops once it exceeds `limit`, so the result
    is > limit exactly when the value nests deeper than `limit`."""
    if not isinstance(obj, (list, dict)):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        for v in value.values() if isinstance(value, dict) else value:
            if isinstance(v, (list, dict)):
                stack.append((v, depth + 1))
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(data: bytes | str, where: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text; raise CpbenchError('<where>: not valid JSON (...)') for anything a strict reader refuses."""
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CpbenchError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
    try:
        # The C parser guards its recursion (RecursionError past ~1,000 levels, caught below); the depth cap is
        # checked on the parsed value, which costs one pass over its containers.
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise CpbenchError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise CpbenchError(f"{where}: JSON nested deeper than {max_depth} levels") from None
    except (ValueError, MemoryError) as exc:  # huge integers, NaN/Infinity literals, ...
        raise CpbenchError(f"{where}: not valid JSON ({str(exc) or type(exc).__name__})") from None
    if nesting_depth(value, max_depth) > max_depth:
        raise CpbenchError(f"{where}: JSON nested deeper than {max_depth} levels")
    return value


def load_file(path: str | Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """`loads` of a file, refusing files larger than `max_bytes` before reading them."""
    p = Path(path)
    try:
        if p.exists() and not p.is_file():  # a FIFO would block, /dev/zero never ends (its size reads as 0)
            raise CpbenchError(f"{p}: not a regular file (a FIFO, a device or a directory)")
        size = p.stat().st_size
        if size > max_bytes:
            raise CpbenchError(f"{p}: {size} bytes is larger than the {max_bytes} accepted for a JSON file")
        data = p.read_bytes()
    except OSError as exc:
        raise CpbenchError(f"{p}: unreadable ({exc.strerror or exc})") from None
    return loads(data, str(p), max_depth=max_depth)
