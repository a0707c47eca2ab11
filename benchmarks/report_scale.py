"""`db-test-action report` on 100,000 testcases in 50 files, next to a plain junitparser load of the same files.

Each contender runs in its own subprocess (fresh interpreter, this checkout's src/ first on the path) so
peak RSS is its own; each runs --repeat times and the best time counts (the machine is shared), with the
largest peak RSS. Printed: wall seconds (imports included), peak RSS, and our ratio to junitparser.
For context, a whole-file defusedxml parse (the pure-Python ElementTree that defusedxml's fromstring uses)
of the same files. Targets: ≤ 1.5× the junitparser load, < 10 s, < 500 MB.

    python benchmarks/report_scale.py [--tests 100000] [--files 50] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

TRACEBACK = """\
    @pytest.fixture
    async def workspace(db_session):
>       await db_session.execute(text("DROP TABLE workspaces"))

tests/conftest.py:{line}:
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _
/usr/lib/python3/site-packages/sqlalchemy/engine/base.py:1967: in _exec_single_context
    self.dialect.do_execute(
{filler}
E   sqlalchemy.exc.InternalError: (sqlalchemy.dialects.postgresql.asyncpg.Error) <class \
'asyncpg.exceptions.{exc}'>: {msg}

tests/conftest.py:{line}: InternalError"""

KINDS = [
    ("DependentObjectsStillExistError", "cannot drop table workspaces because other objects depend on it"),
    ("InternalServerError", "tuple concurrently updated"),
    ("UniqueViolationError", 'duplicate key value violates unique constraint "workspaces_pkey"'),
    ("DeadlockDetectedError", "deadlock detected"),
]

CHILD_REPORT = """
import resource, sys, time
t = time.perf_counter()
from db_test_action.cli import main
rc = main(["report", sys.argv[1], "--json", sys.argv[2], "--markdown", sys.argv[3], "--fail-on", "none"])
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)
"""

CHILD_JUNITPARSER = """
import resource, sys, time
from pathlib import Path
t = time.perf_counter()
from junitparser import JUnitXml
cases = failed = 0
for path in sorted(Path(sys.argv[1]).glob("*.xml")):
    xml = JUnitXml.fromfile(str(path))
    if sys.argv[2] == "iterate":
        for suite in xml:
            for case in suite:
                cases += 1
                failed += bool(case.result)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, cases)
"""


def generate(folder: Path, tests: int, files: int, seed: int = 7) -> int:
    """pytest-shaped xunit1 files `shard-N-run-1.xml`; ~4 % setup/teardown errors with 2-6 KB tracebacks."""
    rng = random.Random(seed)
    per_file = tests // files
    size = 0
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
                exc, msg = KINDS[i % len(KINDS)]
                filler = "\n".join(
                    f"    frame {k}: " + "x" * rng.randint(40, 120) for k in range(rng.randint(20, 60))
                )
                text = TRACEBACK.format(line=i % 300, filler=filler, exc=exc, msg=msg)
                phase = "setup" if roll < 0.03 else "teardown"
                message = f'failed on {phase} with "sqlalchemy.exc.InternalError: {msg}"'
                parts.append(
                    f"<testcase {attrs}><error message={quoteattr(message)}>{escape(text)}</error></testcase>"
                )
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


CHILD_DEFUSEDXML = """
import resource, sys, time
from pathlib import Path
t = time.perf_counter()
import defusedxml.ElementTree as DET
cases = 0
for path in sorted(Path(sys.argv[1]).glob("*.xml")):
    cases += sum(1 for _ in DET.fromstring(path.read_bytes(), forbid_dtd=True).iter("testcase"))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, cases)
"""

SRC = Path(__file__).resolve().parent.parent / "src"


def measure(code: str, *args: str, repeat: int = 1) -> tuple[float, float, str]:
    """Best wall time and largest peak RSS (MB) of `repeat` fresh interpreters, plus the child's last word."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env
        ).stdout
        seconds, rss_kb, extra = out.strip().splitlines()[-1].split()
        runs.append((float(seconds), int(rss_kb) / 1024, extra))
    return min(r[0] for r in runs), max(r[1] for r in runs), runs[-1][2]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the best time counts")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "results"
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        size = generate(folder, args.tests, args.files)
        print(f"generated {args.tests:,} testcases in {args.files} files, {size / 1e6:.1f} MB "
              f"({time.perf_counter() - started:.1f}s)")  # fmt: skip
        out = Path(tmp)
        n = args.repeat
        parse_s, parse_mb, _ = measure(CHILD_JUNITPARSER, str(folder), "parse", repeat=n)
        iter_s, iter_mb, cases = measure(CHILD_JUNITPARSER, str(folder), "iterate", repeat=n)
        defused_s, defused_mb, _ = measure(CHILD_DEFUSEDXML, str(folder), repeat=n)
        ours_s, ours_mb, rc = measure(
            CHILD_REPORT, str(folder), str(out / "r.json"), str(out / "r.md"), repeat=n
        )
        report = json.loads((out / "r.json").read_text())
        md_chars = len((out / "r.md").read_text())
    print(f"junitparser fromfile (parse only)    {parse_s:6.2f} s  {parse_mb:6.0f} MB")
    print(f"junitparser fromfile + every case    {iter_s:6.2f} s  {iter_mb:6.0f} MB  ({cases} cases)")
    print(f"defusedxml fromstring (context)      {defused_s:6.2f} s  {defused_mb:6.0f} MB")
    print(f"db-test-action report (JSON + MD)    {ours_s:6.2f} s  {ours_mb:6.0f} MB  (exit {rc}, "
          f"{report['totals']['tests']:,} tests, {len(report['tests']):,} failing, markdown {md_chars:,} chars)")  # fmt: skip
    print(f"ratio vs parse only: {ours_s / parse_s:.2f}×   vs parse + iterate: {ours_s / iter_s:.2f}×")
    ok = ours_s <= 1.5 * iter_s and ours_s < 10 and ours_mb < 500
    print(f"targets (≤ 1.5× junitparser load, < 10 s, < 500 MB): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
