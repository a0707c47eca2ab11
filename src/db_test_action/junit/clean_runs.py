"""Runs of clean pytest testcases taken from the bytes at C speed, the rest of the file left to expat.

Why: ~95 % of a big report is `<testcase classname="…" name="…" file="…" line="…" time="…" />`, and
taking each through expat's two Python callbacks costs more than parsing all the file's bytes. A regex
(`CLEAN`) splits each piece of the file into those testcases and what lies between; the testcases'
fields become `PassRow`s by C loops over columns (`map`, `zip`), and only what lies between reaches
expat. The rows are exactly what the reader would make of the same testcases (tests/test_junit_clean.py
compares every fixture, the corpus and hypothesis-made files both ways).

A testcase is taken out of expat's stream only where that cannot change what expat decides:
- its syntax is a strict subset of XML's: fixed attributes in pytest's order, values of printable
  ASCII without `"`, `&` or `<` (nothing for expat to normalise or expand), digits for line and time;
- the file has no comment, CDATA section or processing instruction after its prolog (in one, the same
  bytes are not markup); from the first `<!` or `<?`, the file goes to expat whole;
- the bytes expat has before it end in content (a complete tag, then text without `&` and not in the
  middle of a character), expat has read all of them (its reparse deferral is off meanwhile), and the
  reader is directly inside a suite with no inherited runner properties: where the reader would make
  the testcase a clean row. Removing a well-formed empty element there cannot mend a broken file: a
  broken file stays broken. It can break a well-formed one (`]]` before and `>` after join into `]]>`),
  which is then read again the usual way, like any file expat refuses;
- the file is UTF-8 (declared or by default).
Anything else is fed to expat as it came. A file expat finds broken is read again the usual way
(parse.py), so every problem, line and truncation verdict is the usual one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from itertools import compress, pairwise, repeat
from operator import add, itemgetter
from typing import TypeVar, cast
from xml.parsers import expat
from xml.parsers.expat import XMLParserType

from db_test_action.junit.ids import id_start
from db_test_action.junit.reader import JUnitReader, PassRow

T = TypeVar("T")
K = TypeVar("K")
_VALUE = rb"[ !#-%'-;=-~]"  # printable ASCII but `"`, `&` and `<`: read by expat as written


def clean_pattern(possessive: bool) -> re.Pattern[bytes]:
    """A clean testcase, its 5 fields and its space before `/>` as groups. Possessive repeats (`*+`,
    Python ≥ 3.11) spare the engine its backtracking bookkeeping (~0.01 s of 100,000 testcases) and
    match the same: every repeat stops at a byte it excludes."""
    template = (
        rb'<testcase classname="(V*P)" name="(V*P)"(?: file="(V+P)")?(?: line="([0-9]{1,9}P)")?'
        rb' time="([0-9]{1,7}P(?:\.[0-9]{1,9}P)?)"( ?)/>'
    )
    return re.compile(template.replace(b"P", b"+" if possessive else b"").replace(b"V", _VALUE))


CLEAN = clean_pattern(sys.version_info >= (3, 11))
_MARKUP = re.compile(rb"<[!?]")  # a comment, CDATA section, DOCTYPE or processing instruction
_STRIDE = 7  # CLEAN.split: what came before, then a testcase's 5 fields and its space before `/>`
# From the last `<` fed to expat: a whole tag (quotes balanced), then text without a reference.
_IN_CONTENT = re.compile(rb"""<[^<>"']*(?:(?:"[^"<]*"|'[^'<]*')[^<>"']*)*>[^<&]*""")
_WHITESPACE = b" \t\r\n"  # XML's: a testcase's neighbours that a suite ignores
MAX_CARRY = 1 << 20  # held back without a `<` in sight (a huge tag or text): the fast path goes off

# Caches shared by the files of one report (pure): (classname, file) as bytes → (what a test id starts
# with, the file), and `line` as bytes → (0-based, 1-based); each cleared when it grows past _CACHED.
_PREFIXES: dict[tuple[bytes, bytes | None], tuple[str, str | None]] = {}
_LINES: dict[bytes | None, tuple[int | None, int | None]] = {None: (None, None)}
# `time` as bytes → seconds: pytest writes milliseconds, so 100,000 testcases share a few thousand values
# (one float each instead of one per testcase: ~3 MB less to allocate).
_SECONDS: dict[bytes, float] = {}
_CACHED = 20_000


# An expat that defers reparsing (≥ 2.6) under a pyexpat that cannot turn that off (a system expat under
# an older Python): the reader could lag the bytes fed, so runs are never taken (see CleanRuns).
USABLE = expat.version_info < (2, 6, 0) or hasattr(expat.ParserCreate(), "SetReparseDeferralEnabled")


def is_utf8(head: bytes) -> bool:
    """Whether the file is UTF-8 by its start: no declaration, or one naming UTF-8 (the fast path's bytes)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00", b"<\x00")):  # UTF-16 or -32
        return False
    head = head.removeprefix(b"\xef\xbb\xbf")
    if not head.startswith(b"<?xml"):
        return True
    end = head.find(b"?>")
    declared = _ENCODING.search(head, 0, end) if end >= 0 else None
    return end >= 0 and (declared is None or declared.group(1).lower() in (b"utf-8", b"utf8"))


_ENCODING = re.compile(rb"""encoding\s*=\s*["']([^"']*)["']""")


class CleanRuns:
    """Feeds a file to expat piece by piece, taking the clean testcases out of the stream as rows."""

    def __init__(self, reader: JUnitReader, parser: XMLParserType) -> None:
        self.reader, self.parse = reader, parser.Parse
        self.take = reader.take_clean  # the reader's own check and count
        # expat ≥ 2.6 defers a token that did not end in what it was given until twice as much has come
        # (and pyexpat hands it more than a megabyte in 1 MB parts): the reader would then lag the bytes
        # fed. Off while runs are taken (no token here stays open long: pieces end before a `<`), back on
        # with the fast path off, where it keeps a huge token from being rescanned at every chunk.
        self.defer = getattr(parser, "SetReparseDeferralEnabled", None)
        if self.defer is not None:
            self.defer(False)
        self.held: list[bytes] = []  # from the last `<` seen: bytes waiting for the next one
        self.held_size = 0
        self.on = True  # off from the first comment, CDATA section or processing instruction
        self.in_content = False  # whether what expat has ends in content (see the module docstring)

    def feed_raw(self, data: bytes) -> None:
        """Bytes expat must see as they are (the prolog, or the pieces after the fast path went off)."""
        if data:
            self.parse(data, False)
            self._track(data)

    def feed(self, chunk: bytes, begin: int = 0) -> None:
        """The file's next bytes (from `begin`: the head is passed whole, after its prolog). What follows
        the last `<` waits for the next chunk, so no piece ends inside a tag."""
        if not self.on:
            self._release()
            self.parse(chunk[begin:] if begin else chunk, False)
            return
        cut = chunk.rfind(b"<", begin)
        if cut < 0:  # no tag starts here: the held-back tag goes on, or a long text does
            self.held.append(chunk[begin:] if begin else chunk)
            self.held_size += len(chunk) - begin
            if self.held_size > MAX_CARRY:  # a megabyte without a `<` (rare): the rest goes to expat whole,
                self._off()  # with its deferral back on for the token that may be that long
                self._release()
            return
        if cut > begin or self.held:
            self._piece(b"".join([*self.held, memoryview(chunk)[begin:cut]]))
        self.held, self.held_size = [chunk[cut:]], len(chunk) - cut

    def close(self) -> None:
        """The bytes held back, then the end of the file."""
        if self.held:
            self._piece(b"".join(self.held))
            self.held = []
        self.parse(b"", True)

    def _release(self) -> None:
        """The bytes held back, to expat as they are (the fast path is off)."""
        if self.held:
            self.parse(b"".join(self.held), False)
            self.held, self.held_size = [], 0

    def _piece(self, piece: bytes) -> None:
        """Bytes that begin at a `<` (or in a text) and end before one: no tag is cut at either end."""
        if not self.on:
            self.parse(piece, False)
            return
        parts = CLEAN.split(piece)
        between = parts[::_STRIDE]  # between[k] comes before testcase k
        last = len(between) - 1
        if not last:
            self._gap(piece)
            return
        # Runs: the testcases from one non-blank gap to the next; the blank gaps inside a run never
        # reach expat (whitespace in a suite is ignored). The last gap always closes a run.
        bounds = [0, *compress(range(1, last), map(bytes.strip, between[1:last], repeat(_WHITESPACE))), last]
        if not self._gap(between[0]):  # the first piece's root and suite: read before the rows are made
            self.parse(_as_they_came(parts, 0, last) + between[last], False)
            return
        columns = _columns(parts)
        one_based = self.reader.is_pytest
        rows = self._rows(columns, one_based)
        for start, end in pairwise(bounds):
            if start and not self._gap(between[start]):
                self.parse(_as_they_came(parts, start, last) + between[last], False)
                return
            if self.reader.is_pytest != one_based:  # a suite began in the gap: lines count anew
                one_based = self.reader.is_pytest
                rows = self._rows(columns, one_based)
            if rows is not None and self.in_content and self.take(end - start):
                self.reader.rows.extend(rows[start:end])
            else:
                self.feed_raw(_as_they_came(parts, start, end))
        self._gap(between[last])

    def _gap(self, data: bytes) -> bool:
        """Feeds what lies between testcases; False, and the fast path off, if it holds a comment, a CDATA
        section or a processing instruction (from there on, a `<` may not be markup)."""
        if _MARKUP.search(data) is None:
            self.feed_raw(data)
            return True
        self._off()
        self.parse(data, False)
        return False

    def _off(self) -> None:
        self.on = False
        if self.defer is not None:
            self.defer(True)

    def _rows(self, columns: _Columns | None, one_based: bool) -> list[PassRow] | None:
        if columns is None:
            return None
        ids, paths, lines, seconds = columns
        reader = self.reader
        shard, run = reader.file_shard_run
        return list(
            map(
                tuple.__new__,
                repeat(PassRow),
                zip(
                    ids, paths, map(itemgetter(one_based), lines), seconds,
                    repeat(reader.name), repeat(shard), repeat(run),
                ),
            )
        )  # fmt: skip

    def _track(self, data: bytes) -> None:
        """Whether what expat has now ends in content: after its last `<`, a whole tag and text without a
        reference, and no byte of a character that may go on (joined to the bytes after a run taken
        out, the halves of a character would make one that is not in the file)."""
        at = data.rfind(b"<")
        if at >= 0:
            self.in_content = _IN_CONTENT.fullmatch(data, at) is not None
        elif b"&" in data:
            self.in_content = False
        if not data[-3:].isascii():
            self.in_content = False


_Columns = tuple[list[str], list[str | None], list[tuple[int | None, int | None]], list[float]]


def _columns(parts: list[bytes]) -> _Columns | None:
    """A piece's clean testcases as columns: test ids, files, (0-based, 1-based) lines, seconds; None
    when one has neither classname nor name (the reader numbers those)."""
    keys = list(zip(parts[1::_STRIDE], parts[3::_STRIDE], strict=True))
    found = list(map(_PREFIXES.get, keys))
    prefixes = _filled(found, keys, _prefix)
    names = list(map(bytes.decode, parts[2::_STRIDE]))
    starts = list(map(itemgetter(0), prefixes))
    if "" in starts and "" in [s or n for s, n in zip(starts, names, strict=True)]:
        return None
    line_keys = parts[4::_STRIDE]
    found_lines: list[tuple[int | None, int | None] | None] = list(map(_LINES.get, line_keys))
    lines = _filled(found_lines, line_keys, _line)
    time_keys = parts[5::_STRIDE]
    found_seconds: list[float | None] = list(map(_SECONDS.get, time_keys))
    seconds = _filled(found_seconds, time_keys, _seconds)
    return (
        list(map(add, starts, names)),
        list(map(itemgetter(1), prefixes)),
        lines,
        seconds,
    )


def _filled(found: list[T | None], keys: Sequence[K], make: Callable[[K], T]) -> list[T]:
    """Cache lookups (`found`, by `keys`) with each miss made and cached by `make`."""
    if None not in found:
        return cast(list[T], found)
    return [value if value is not None else make(key) for value, key in zip(found, keys, strict=True)]


def _as_they_came(parts: list[bytes], start: int, end: int) -> bytes:
    """Testcases `start` to `end - 1` of a piece as they came, with the gaps between them: the tags are
    made again from their fields (CLEAN matches one spelling; keeping each tag's bytes too cost ~190
    bytes of garbage per testcase, for a fallback that is rare)."""
    out = []
    for k in range(start, end):
        at = _STRIDE * k
        if k > start:
            out.append(parts[at])
        classname, name, file, line, seconds, space = parts[at + 1 : at + _STRIDE]
        out.append(b'<testcase classname="%s" name="%s"' % (classname, name))
        if file is not None:
            out.append(b' file="%s"' % file)
        if line is not None:
            out.append(b' line="%s"' % line)
        out.append(b' time="%s"%s/>' % (seconds, space))
    return b"".join(out)


def _prefix(key: tuple[bytes, bytes | None]) -> tuple[str, str | None]:
    """`id_start` of a classname and file as bytes, cached."""
    if len(_PREFIXES) > _CACHED:
        _PREFIXES.clear()
    _PREFIXES[key] = found = id_start(key[0].decode(), None if key[1] is None else key[1].decode())
    return found


def _seconds(key: bytes) -> float:
    if len(_SECONDS) > _CACHED:
        _SECONDS.clear()
    _SECONDS[key] = value = float(key)
    return value


def _line(key: bytes) -> tuple[int, int]:
    if len(_LINES) > _CACHED:
        _LINES.clear()
        _LINES[None] = (None, None)
    _LINES[key] = pair = (int(key), int(key) + 1)
    return pair
