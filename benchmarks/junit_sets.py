"""Deterministic JUnit data sets for the benchmarks (and the golden test of the report JSON).

`generate_failure_heavy` writes what a big, badly broken pytest suite leaves behind: ~4 % of testcases fail
or error, each with a pytest-sized traceback (~2 KB) whose message is distinct (ids, keys, uuids, line
numbers differ), across the exceptions this project classifies and several it does not. Same seed, same
bytes: tests/test_report_golden.py pins the report JSON written from a small instance of it.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

SITE = ".venv/lib/python3.12/site-packages"
WRAPPER = "sqlalchemy.exc.{cls}: (sqlalchemy.dialects.postgresql.asyncpg.{cls}) <class 'asyncpg.exceptions.{exc}'>: "


def _kinds(rng: random.Random, n: int) -> list[tuple[str, list[str], str]]:
    """(final exception line, further `E` lines, the exception's short name) for failure number n."""
    key = uuid.UUID(int=rng.getrandbits(128))
    table = f"ws_{n % 97}"
    pid = 1000 + rng.randrange(60000)
    kinds = [
        (
            f"AssertionError: assert {400 + n % 200} == 201",
            [f" +  where {400 + n % 200} = <Response [{400 + n % 200}]>.status_code"],
            "AssertionError",
        ),
        (
            WRAPPER.format(cls="IntegrityError", exc="UniqueViolationError")
            + f'duplicate key value violates unique constraint "{table}_pkey"',
            [
                f"DETAIL:  Key (id)=({key}) already exists.",
                f"[SQL: INSERT INTO {table} (id, name) VALUES ($1::UUID, $2::VARCHAR)]",
                f"[parameters: ('{key}', 'name-{n}')]",
            ],
            "IntegrityError",
        ),
        (
            WRAPPER.format(cls="InternalError", exc="DependentObjectsStillExistError")
            + f"cannot drop table {table} because other objects depend on it",
            [
                f"DETAIL:  constraint notes_{n}_ws_fkey on table notes_{n} depends on table {table}",
                "HINT:  Use DROP ... CASCADE to drop the dependent objects too.",
                f"[SQL: DROP TABLE {table}]",
            ],
            "InternalError",
        ),
        (
            WRAPPER.format(cls="InternalError", exc="InternalServerError") + "tuple concurrently updated",
            [f"[SQL: CREATE OR REPLACE FUNCTION encrypt_{n}(data text) RETURNS bytea AS $$ SELECT 1 $$]"],
            "InternalError",
        ),
        (
            WRAPPER.format(cls="DBAPIError", exc="DeadlockDetectedError") + "deadlock detected",
            [
                f"DETAIL:  Process {pid} waits for AccessExclusiveLock on relation {16000 + n} of database 5; "
                f"blocked by process {pid + 7}.",
                f"[SQL: TRUNCATE {table} CASCADE]",
            ],
            "DBAPIError",
        ),
        (
            WRAPPER.format(cls="ProgrammingError", exc="UndefinedTableError")
            + f'relation "{table}_{n}" does not exist',
            [f"[SQL: SELECT * FROM {table}_{n}]"],
            "ProgrammingError",
        ),
        (
            f"ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', {5432 + n % 500})",
            [],
            "ConnectionRefusedError",
        ),
        (f"KeyError: 'field_{n}'", [], "KeyError"),
        (f"Failed: Timeout >{10 + n % 50}.0s", [], "Failed"),
        (f"ValueError: invalid literal for int() with base 10: 'x{n}'", [], "ValueError"),
    ]
    return kinds


def _traceback(rng: random.Random, module: str, line: int, final: str, more: list[str], short: str) -> str:
    """A pytest `--tb=long` report: the test source, frames through site-packages, `E` lines, the location."""
    addr = f"0x7f{rng.getrandbits(40):010x}"
    head = [
        f"db_session = <sqlalchemy.ext.asyncio.session.AsyncSession object at {addr}>",
        f"client = <httpx.AsyncClient object at 0x7f{rng.getrandbits(40):010x}>",
        "",
        f"    async def test_workspace_{line}(db_session, client):",
        f'        payload = {{"name": "ws-{line}", "owner": "{uuid.UUID(int=rng.getrandbits(128))}"}}',
        '>       response = await client.post("/workspaces", json=payload)',
        "",
        f"tests/{module}.py:{line}: ",
        "_ " * 40,
    ]
    frames = []
    for k in range(rng.randint(3, 6)):
        frames += [
            f"{SITE}/sqlalchemy/engine/base.py:{1900 + k * 13}: in _exec_single_context",
            f"    self.dialect.do_execute(cursor, str_statement, effective_parameters, context)  # {k}",
            f"{SITE}/sqlalchemy/dialects/postgresql/asyncpg.py:{500 + k * 7}: in execute",
            "    self._adapt_connection.await_(self._prepare_and_execute(operation, parameters))",
        ]
    tail = ["", f"E   {final}", *(f"E   {m}" for m in more), "",
            f"{SITE}/sqlalchemy/engine/default.py:{940 + line % 7}: {short}"]  # fmt: skip
    return "\n".join(head + frames + tail)


def generate_failure_heavy(folder: Path, tests: int, files: int, seed: int = 11) -> int:
    """pytest xunit1 files `shard-N-run-1.xml`: ~4 % failing (call failures, setup/teardown errors) with
    distinct ~2 KB tracebacks, ~2 % skipped; the bytes written."""
    rng = random.Random(seed)
    per_file = tests // files
    size = failing = 0
    for shard in range(1, files + 1):
        parts = [
            '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
            f'<testsuite name="pytest" errors="0" failures="0" skipped="0" tests="{per_file}" time="100.0">'
        ]
        for i in range(per_file):
            module = f"test_mod{(shard * 7 + i // 40) % 60}"
            attrs = (
                f'classname="tests.{module}.TestThing" name="test_case_{shard}_{i}[param-{i % 7}]" '
                f'file="tests/{module}.py" line="{i % 400}" time="{rng.random() * 0.05:.3f}"'
            )
            roll = rng.random()
            if roll < 0.04:
                failing += 1
                final, more, short = rng.choice(_kinds(rng, failing))
                text = _traceback(rng, module, i % 400, final, more, short)
                message = "\n".join([final, *more])
                if roll < 0.02:
                    body = f"<failure message={quoteattr(message)}>{escape(text)}</failure>"
                else:
                    phase = "setup" if roll < 0.033 else "teardown"
                    wrapped = f'failed on {phase} with "{message}"'
                    body = f"<error message={quoteattr(wrapped)}>{escape(text)}</error>"
                parts.append(f"<testcase {attrs}>{body}</testcase>")
            elif roll < 0.06:
                parts.append(
                    f'<testcase {attrs}><skipped type="pytest.skip" message="not here">x</skipped></testcase>'
                )
            else:
                parts.append(f"<testcase {attrs} />")
        parts.append("</testsuite></testsuites>")
        data = "".join(parts).encode()
        (folder / f"shard-{shard}-run-1.xml").write_bytes(data)
        size += len(data)
    return size
