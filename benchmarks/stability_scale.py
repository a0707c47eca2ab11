"""`db-test-action stability` on one night of 20 runs × 5,000 tests (5 % flaky), next to a bare parse.

The nightly job reads every run's JUnit file; the stability verdict (flake rates, Wilson intervals,
statuses, causes, history, Markdown, JSON) must cost little beyond reading them. Named alternative,
measured in the same run on the same files: a bare junitparser load touching every case. Each contender
runs in its own interpreter (this checkout's src/ first), --repeat times in rounds (each contender once
per round, so the machine's drift hits all alike); the best CPU and wall time count, peak RSS is each process's own high-water mark. Target: ≤ 2× the bare parse (CPU time).

    python benchmarks/stability_scale.py [--runs 20] [--tests 5000] [--flaky 0.05] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from report_scale import (
    CHILD_JUNITPARSER,
    CPU,
    HWM,
    SRC,
    Contender,
    byte_compile,
    measure_interleaved,
    source_of,
)

CHILD_STABILITY = f"""
import contextlib, io, resource, sys, time
t, c = time.perf_counter(), {CPU}
from db_test_action.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    rc = main(["stability", sys.argv[1], "--history", sys.argv[2], "--markdown", sys.argv[3],
               "--json", sys.argv[4], "--night", "2026-01-01", "--fail-on", "none"])
print(time.perf_counter() - t, {CPU} - c, {HWM}, rc)
"""

CHILD_OUR_PARSE = f"""
import resource, sys, time
from pathlib import Path
t, c = time.perf_counter(), {CPU}
from db_test_action.junit.files import parse_junit_file
rows = sum(len(parse_junit_file(p).rows) for p in sorted(Path(sys.argv[1]).glob("*.xml")))
print(time.perf_counter() - t, {CPU} - c, {HWM}, rows)
"""

TRACE = """\
    async def test_it(db_session):
>       await db_session.execute(insert(Workspace).values(id=WORKSPACE_ID))

tests/{module}.py:{line}:
E   sqlalchemy.exc.IntegrityError: (sqlalchemy.dialects.postgresql.asyncpg.IntegrityError) <class \
'asyncpg.exceptions.UniqueViolationError'>: duplicate key value violates unique constraint "ws_pkey"
E   DETAIL:  Key (id)=({key}) already exists.

tests/{module}.py:{line}: IntegrityError"""


def generate(folder: Path, runs: int, tests: int, flaky: float, seed: int = 5) -> int:
    """`shard-1-run-K.xml` for K in 1..runs; a `flaky` share of tests fails in ~30 % of the runs."""
    rng = random.Random(seed)
    racy = set(rng.sample(range(tests), int(tests * flaky)))
    size = 0
    for run in range(1, runs + 1):
        parts = ['<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
                 f'<testsuite name="pytest" tests="{tests}" time="60.0">']  # fmt: skip
        for i in range(tests):
            module = f"test_mod{i % 40}"
            attrs = (f'classname="tests.{module}.TestThing" name="test_{i}" file="tests/{module}.py" '
                     f'line="{i % 300}" time="{rng.random() * 0.02:.3f}"')  # fmt: skip
            if i in racy and rng.random() < 0.3:
                message = f'sqlalchemy.exc.IntegrityError: duplicate key value violates unique constraint "ws_pkey" ({run}-{i})'
                text = TRACE.format(module=module, line=i % 300, key=f"{run:04d}-{i:06d}")
                parts.append(
                    f"<testcase {attrs}><failure message={quoteattr(message)}>{escape(text)}</failure></testcase>"
                )
            else:
                parts.append(f"<testcase {attrs}/>")
        parts.append("</testsuite></testsuites>")
        data = "".join(parts).encode()
        (folder / f"shard-1-run-{run}.xml").write_bytes(data)
        size += len(data)
    return size


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tests", type=int, default=5000)
    parser.add_argument("--flaky", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", metavar="REF", help="also run the stability command of this git ref")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "results"
        folder.mkdir()
        size = generate(folder, args.runs, args.tests, args.flaky)
        print(
            f"generated {args.runs} runs × {args.tests:,} tests ({args.flaky:.0%} flaky), {size / 1e6:.1f} MB"
        )
        n = args.repeat
        byte_compile(SRC)
        history = root / "history.jsonl"
        contenders = [
            Contender(CHILD_JUNITPARSER, ("results", "iterate"), cwd=root),
            Contender(CHILD_OUR_PARSE, ("results",), cwd=root),
            Contender(
                CHILD_STABILITY, ("results", str(history), str(root / "s.md"), str(root / "s.json")), cwd=root
            ),
        ]
        if args.before:
            src = source_of(args.before, root)
            byte_compile(src)
            contenders.append(Contender(CHILD_STABILITY, ("results", str(root / "h2.jsonl"), str(root / "b.md"),
                                                          str(root / "b.json")), src=src, cwd=root))  # fmt: skip
        bare, ours_parse, ours, *rest = measure_interleaved(contenders, n)
        before = rest[0] if rest else None
        if before is not None:
            same = (root / "b.md").read_text() == (root / "s.md").read_text()
    print(bare.row("junitparser fromfile + every case", f"({bare.word} cases)"))
    print(ours_parse.row("db-test-action parse only (context)", f"({ours_parse.word} rows)"))
    print(ours.row("db-test-action stability", f"(exit {ours.word})"))
    if before is not None:
        print(before.row("… the same, before (--before)", f"Markdown {'identical' if same else 'DIFFERS'}"))
    ratio = ours.cpu / bare.cpu
    print(f"ratio (cpu) vs junitparser: {ratio:.2f}×   (wall: {ours.wall / bare.wall:.2f}×)")
    met = ratio <= 2
    print(f"target (≤ 2× a bare parse): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
