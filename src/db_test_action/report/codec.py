"""The JSON report, both ways (versioned; documented in docs/cli.md, "JSON report"). Pure.

Apart from the model so that the vocabulary stays a list of types: writing is orjson over the frozen
dataclasses, reading rebuilds them from their annotations, and a document of the wrong shape is a
one-line error naming where, never a crash.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from enum import Enum
from typing import Any

import orjson

from db_test_action.errors import DbTestActionError
from db_test_action.model import Report

SCHEMA_VERSION = 1


def report_json_chunks(report: Report, items_per_chunk: int = 256) -> Iterator[bytes]:
    """The JSON report as UTF-8 chunks: `schema_version` first, enums as their values, tuples as lists.

    orjson serialises the frozen slotted dataclasses, enums and tuples natively, in C: a report holding
    4,000 failing tests with their tracebacks takes tens of milliseconds instead of a second of recursive
    dataclass-to-dict conversion. The long arrays (tests, quarantined) come a few hundred items at a
    time, so the writer never holds the whole document (constant memory beyond the report itself).
    Non-finite floats (the reader keeps them out of a report) would be `null`.
    """
    yield b'{"schema_version":%d' % SCHEMA_VERSION
    for field in dataclasses.fields(Report):
        value = getattr(report, field.name)
        key = b',"%s":' % field.name.encode()
        if field.name in _STREAMED and len(value) > items_per_chunk:
            yield key + b"["
            for start in range(0, len(value), items_per_chunk):
                chunk = orjson.dumps(value[start : start + items_per_chunk])
                yield (b"," if start else b"") + chunk[1:-1]
            yield b"]"
        else:
            yield key + orjson.dumps(value)
    yield b"}\n"


_STREAMED = frozenset(("tests", "quarantined"))


def report_json(report: Report) -> bytes:
    """The whole JSON report (`report_json_chunks` joined)."""
    return b"".join(report_json_chunks(report))


def report_to_dict(report: Report) -> dict[str, Any]:
    """Plain JSON-able dict: the parsed `report_json` (the same content, by construction)."""
    return orjson.loads(report_json(report))


def report_from_dict(data: dict[str, Any], where: str = "report JSON") -> Report:
    """Inverse of `report_to_dict`; a wrong version or shape is a one-line error naming the field."""
    if not isinstance(data, dict):
        raise DbTestActionError(f"{where}: expected a JSON object; pass a file written by `report --json`")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DbTestActionError(
            f"{where}: schema_version {version!r} is not supported; this version reads {SCHEMA_VERSION}"
        )
    body = {k: v for k, v in data.items() if k != "schema_version"}
    return _from_plain(Report, body, where)


def _from_plain(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _from_plain(inner, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise DbTestActionError(f"{where}: expected a list; re-write it with `report --json`")
        inner = typing.get_args(tp)[0]
        return tuple(_from_plain(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise DbTestActionError(
                f"{where}: {value!r} is not a {tp.__name__}; re-write it with `report --json`"
            ) from None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DbTestActionError(
                f"{where}: expected an object for {tp.__name__}; re-write it with `report --json`"
            )
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _from_plain(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING:
                raise DbTestActionError(
                    f"{where}: missing field {f.name!r}; re-write it with `report --json`"
                )
        return tp(**kwargs)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise DbTestActionError(
            f"{where}: expected {tp.__name__}, got {type(value).__name__}; re-write it with `report --json`"
        )
    return value
