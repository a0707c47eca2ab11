"""`db-test-action report` on 100,000 testcases in 50 files, next to a plain junitparser load of the same files.

Two data sets, generated deterministically: "few failures" (~4 % fixture errors sharing 4 messages) and
"failure-heavy" (benchmarks/junit_sets.py: ~4 % failing or erroring, each with a distinct ~2 KB pytest
traceback, over the exceptions the classifier knows and several it does not). Each contender runs in its
own subprocess (fresh interpreter, this checkout's src/ first on the path) so peak RSS is its own; each
runs --repeat times, in rounds that run each contender once in turn, and the best time counts, with the
largest peak RSS. Printed: wall seconds and CPU
seconds (user + system; on a shared machine the wall time mostly measures the neighbours), imports
included, peak RSS, and our ratio to the junitparser load (parse + touch every case) by CPU time.

Golden: the failure-heavy report's JSON content (parsed, keys sorted, the top-level fields added later
dropped) must hash to GOLDEN: the content tests/test_report_golden.py pins at 2,000 testcases, i.e. what
commit 1667ec5 wrote plus the deliberate changes since (diagnosis fields, 1-based lines). `--before REF`
also runs that ref's report from `git archive` in the same run, for the before/after table, and says
whether its JSON is identical (against 1667ec5 it is not: those deliberate changes).

Our source is byte-compiled first (`compileall`), as any install is: without .pyc files every run would
also pay the compiler (~0.06 s here, with PYTHONDONTWRITEBYTECODE set), which junitparser does not.
Targets on the failure-heavy set: ≤ 1.5× the junitparser load, < 80 MB peak RSS, identical JSON.

    python benchmarks/report_scale.py [--tests 100000] [--files 50] [--repeat 3] [--keep DIR] [--before REF]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from junit_sets import generate_failure_heavy

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

# Each child prints: wall seconds, CPU seconds, peak RSS (KB), and one word about what it did. Peak RSS is
# the process's own high-water mark (VmHWM): Linux carries ru_maxrss across fork+exec, so a child
# would report this (data-generating) parent's peak instead of its own.
CPU = "(lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_SELF))"
HWM = (
    "next((int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')),"
    " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
)

CHILD_REPORT = f"""
import contextlib, io, resource, sys, time
t, c = time.perf_counter(), {CPU}
from db_test_action.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    rc = main(["report", sys.argv[1], "--json", sys.argv[2], "--markdown", sys.argv[3], "--fail-on", "none"])
print(time.perf_counter() - t, {CPU} - c, {HWM}, rc)
"""

CHILD_JUNITPARSER = f"""
import resource, sys, time
from pathlib import Path
t, c = time.perf_counter(), {CPU}
from junitparser import JUnitXml
cases = failed = 0
for path in sorted(Path(sys.argv[1]).glob("*.xml")):
    xml = JUnitXml.fromfile(str(path))
    if sys.argv[2] == "iterate":
        for suite in xml:
            for case in suite:
                cases += 1
                failed += bool(case.result)
print(time.perf_counter() - t, {CPU} - c, {HWM}, cases)
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


SRC = Path(__file__).resolve().parent.parent / "src"


GOLDEN = "11e1b3bbeeaee98a40e6811ce82855f81838c31aacc470e238a8f7c097d49f7f"  # failure-heavy, 100k / 50
# Top-level fields added after the golden content was fixed (as tests/test_report_golden.py allows).
ADDED_SINCE = frozenset({"new_failures", "new_breaches", "has_base", "hangs"})


class Figures:
    """Best wall and CPU seconds, largest peak RSS (MB) of `repeat` fresh interpreters, the child's last word."""

    def __init__(self, runs: list[tuple[float, float, float, str]]) -> None:
        self.wall = min(r[0] for r in runs)
        self.cpu = min(r[1] for r in runs)
        self.mb = max(r[2] for r in runs)
        self.word = runs[-1][3]

    def row(self, label: str, extra: str = "") -> str:
        return f"  {label:<38} {self.wall:6.2f} s wall {self.cpu:6.2f} s cpu {self.mb:6.0f} MB  {extra}"


@dataclass(frozen=True)
class Contender:
    """One child program to time: its code, arguments, the source tree first on its path, its cwd."""

    code: str
    args: tuple[str, ...]
    src: Path = SRC
    cwd: Path | None = None


def _run_child(c: Contender) -> tuple[float, float, float, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(c.src), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", c.code, *c.args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=c.cwd,
    ).stdout
    wall, cpu, rss_kb, extra = out.strip().splitlines()[-1].split()
    return float(wall), float(cpu), int(rss_kb) / 1024, extra


def measure_interleaved(contenders: list[Contender], repeat: int) -> list[Figures]:
    """`repeat` rounds, each running every contender once in turn: this machine's speed drifts by ±30 %
    over a minute, and rounds make the drift hit all contenders alike (best time of each counts)."""
    runs: list[list[tuple[float, float, float, str]]] = [[] for _ in contenders]
    for _ in range(repeat):
        for i, contender in enumerate(contenders):
            runs[i].append(_run_child(contender))
    return [Figures(r) for r in runs]


def measure(code: str, *args: str, repeat: int = 1, src: Path = SRC, cwd: Path | None = None) -> Figures:
    return measure_interleaved([Contender(code, args, src, cwd)], repeat)[0]


def digest(report: dict) -> str:
    """The report's content, independent of key order and number formatting."""
    content = {k: v for k, v in report.items() if k not in ADDED_SINCE}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def byte_compile(src: Path) -> None:
    """As installed: bytecode compiled once, not on every run (see the docstring)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True, capture_output=True)


def source_of(ref: str, into: Path) -> Path:
    """`src/` of a git ref of this repository, unpacked into `into`."""
    repo = SRC.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def run_set(label: str, folder: Path, work: Path, n: int, before: Path | None) -> tuple[bool, dict]:
    """Measure junitparser and our report on one folder (relative paths: the JSON names `results/…`)."""
    contenders = [
        Contender(CHILD_JUNITPARSER, (folder.name, "iterate"), cwd=folder.parent),
        Contender(CHILD_REPORT, (folder.name, str(work / "r.json"), str(work / "r.md")), cwd=folder.parent),
    ]
    if before is not None:
        contenders.append(Contender(CHILD_REPORT, (folder.name, str(work / "b.json"), str(work / "b.md")),
                                    src=before, cwd=folder.parent))  # fmt: skip
    jp, ours, *old = measure_interleaved(contenders, n)
    report = json.loads((work / "r.json").read_text())
    print(f"{label}: {report['totals']['tests']:,} tests, {len(report['tests']):,} failing, "
          f"{len(report['causes'])} causes")  # fmt: skip
    print(jp.row("junitparser fromfile + every case", f"({jp.word} cases)"))
    print(ours.row("db-test-action report (JSON + MD)", f"(exit {ours.word})"))
    result = {"junitparser": jp, "ours": ours, "digest": digest(report)}
    if old:
        same = json.loads((work / "b.json").read_text()) == report
        same_md = (work / "b.md").read_text() == (work / "r.md").read_text()
        print(old[0].row("… the same, before (--before)", f"JSON {'identical' if same else 'DIFFERS'}, "
                      f"Markdown {'identical' if same_md else 'DIFFERS'}"))  # fmt: skip
        result["before"] = old[0]
    ratio = ours.cpu / jp.cpu
    print(f"  ratio (cpu) vs junitparser: {ratio:.2f}×   (wall: {ours.wall / jp.wall:.2f}×)")
    return ratio <= 1.5, result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the best time counts")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    parser.add_argument("--before", metavar="REF", help="also run the report of this git ref (e.g. main)")
    parser.add_argument("--only", choices=("few", "heavy"), help="measure one data set")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        before = source_of(args.before, Path(tmp)) if args.before else None
        for src in filter(None, (SRC, before)):
            byte_compile(src)
        ok = True
        for key, label, make in (
            ("few", "few failures", generate),
            ("heavy", "failure-heavy", generate_failure_heavy),
        ):
            if args.only and args.only != key:
                continue
            folder = root / key / "results"
            folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            size = make(folder, args.tests, args.files)
            print(f"generated {label}: {args.tests:,} testcases in {args.files} files, {size / 1e6:.1f} MB "
                  f"({time.perf_counter() - started:.1f}s)")  # fmt: skip
            met, result = run_set(label, folder, root / key, args.repeat, before)
            if key == "heavy":
                ours = result["ours"]
                golden = (args.tests, args.files) != (100_000, 50) or result["digest"] == GOLDEN
                met = met and ours.mb < 80 and golden
                print(
                    f"  golden JSON (before this work): {'identical' if golden else 'DIFFERS'}"
                    + ("" if (args.tests, args.files) == (100_000, 50) else " (not checked: other size)")
                )
                print(
                    f"  targets (≤ 1.5× junitparser, < 80 MB, identical JSON): {'met' if met else 'NOT met'}"
                )
            else:
                print(f"  target (≤ 1.5× junitparser): {'met' if met else 'NOT met'}")
            ok = ok and met
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
