"""Reading inputs with errors that name the line, and writing outputs atomically."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence


class InputError(ValueError):
    """Bad user input; the message names the file, line and field."""


def read_jsonl(path: str | Path, required: dict[str, type | tuple[type, ...]] | None = None) -> list[dict]:
    """Parse a JSONL file; every row must be an object holding ``required`` fields of the given types.

    Blank lines are skipped. Errors name the file and the 1-based line number.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            for key, typ in (required or {}).items():
                if key not in row:
                    raise InputError(f"{path}:{n}: missing field {key!r}")
                if not isinstance(row[key], typ):
                    want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
                    raise InputError(f"{path}:{n}: field {key!r} must be {want}, got {type(row[key]).__name__}")
            rows.append(row)
    return rows


def read_json_list(path: str | Path, required: Sequence[str] = ()) -> list[dict]:
    """A JSON file holding a list of objects whose ``required`` fields are strings; errors name the file and item."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a JSON list of objects")
    for n, row in enumerate(rows):
        for key in required:
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise InputError(f"{path}: item {n}: field {key!r} must be a string")
    return rows


def read_csv(path: str | Path, required: Sequence[str] = ()) -> list[dict]:
    """A CSV file's rows as dicts; a row missing a ``required`` field is an error naming the file and line."""
    path = Path(path)
    with require_path(path, path.name).open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for n, row in enumerate(rows, 2):
        for key in required:
            if not row.get(key):
                raise InputError(f"{path}:{n}: missing field {key!r}")
    return rows


UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: the process's umask, for files created through mkstemp / mkdtemp


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path``; it replaces ``path`` only if the block finishes without error.
    The file gets the permissions a plain ``open`` would give it (mkstemp's are owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def default_data_dir() -> Path:
    """``../shared/data`` beside the project checkout (override with ``$TRLM_DATA``)."""
    env = os.environ.get("TRLM_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data"
        if (parent / "pyproject.toml").exists() and cand.exists():
            return cand
    return Path.cwd().parent / "shared" / "data"


def require_path(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found at {p}; pass --data pointing at the shared data folder "
                         "(e.g. ../shared/data) or set TRLM_DATA")
    return p


def check_choice(value: str, choices: Sequence[str], flag: str) -> str:
    """``value`` if it is one of ``choices``; else an InputError naming the flag."""
    if value not in choices:
        raise InputError(f"{flag}: {value!r} is not one of {', '.join(choices)}")
    return value


def split_list(text: str | None, flag: str, kind: Callable[[str], Any] = str) -> list:
    """A comma-separated flag value as a list (``"a, b,,c"`` -> ``["a", "b", "c"]``; ``None`` or ``""`` -> ``[]``),
    each item converted by ``kind`` (``int``, ``float``); an item it refuses is an InputError naming the flag."""
    out = []
    for item in (s.strip() for s in (text or "").split(",")):
        if item:
            try:
                out.append(kind(item))
            except ValueError:
                what = {int: "integers", float: "numbers"}.get(kind, "values")
                raise InputError(f"{flag} must be comma-separated {what}, got {text!r}") from None
    return out


def parse_names(text: str, choices: Sequence[str], flag: str) -> list[str]:
    """Comma-separated names, each one of ``choices``; an InputError names the flag and the unknown ones."""
    names = split_list(text, flag)
    bad = [n for n in names if n not in choices]
    if bad:
        raise InputError(f"{flag}: unknown {', '.join(bad)}; choose from {', '.join(choices)}")
    return names
