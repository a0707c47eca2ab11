"""Stability over a year of history: 365 nights × 5,000 tests, target < 5 s end to end.

Timed (ours): read the history file, aggregate the window (all 365 nights), classify every test, render the
Markdown, append tonight and write the capped file back — everything `db-test-action stability` does
except parsing tonight's JUnit (benchmarks/report_scale.py measures that).

Named alternative, measured in the same run: the obvious layout, one JSON line per night with every test's
counts keyed by node id, aggregated by expanding each night into per-test rows and walking each test's
nights. Same statuses are asserted, so both do the same work.

    python benchmarks/stability_history.py [--nights 365] [--tests 5000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from db_test_action.commands.files import read_history_file, write_history_file
from db_test_action.stability.history import add_night
from db_test_action.stability.nightly import Night, Observed, ObservedTest, SuiteRun, TestCounts, night_of
from db_test_action.stability.rates import StabilitySettings, build_stability, classify_stability
from db_test_action.stability.render import render_stability_markdown

RUNS = 10
CLEAN = TestCounts(RUNS, RUNS, 0, 0, 0, 0)


def synthetic_nights(nights: int, tests: int, seed: int = 7) -> tuple[list[str], list[Night]]:
    """A suite that grows a little over the year, ~2 % of tests racy (each bad on ~30 % of nights), a few broken."""
    rng = random.Random(seed)
    ids = [f"tests/test_mod_{i % 60:02d}.py::TestCase{i % 7}::test_case_{i:05d}" for i in range(tests)]
    racy = rng.sample(ids, tests // 50)
    out = []
    for n in range(nights):
        present = tuple(ids[: tests - (nights - n) // 10])  # newer tests appear over time
        odd = []
        for tid in racy:
            if tid in present and rng.random() < 0.3:
                bad = rng.randint(1, 3)
                odd.append((tid, TestCounts(RUNS, RUNS - bad, bad, rng.randint(0, 1), bad, bad // 2)))
        if n % 40 == 0:
            odd.append((present[n % len(present)], TestCounts(RUNS, 0, RUNS, 0, RUNS, 0)))
        odd.sort()
        runs = tuple(rng.random() > 0.2 for _ in range(RUNS))
        out.append(
            Night(f"2024-{n:03d}", runs, present, CLEAN, tuple(odd), (("unique-violation", len(odd)),))
        )
    return ids, out


def tonight(ids: list[str]) -> Observed:
    rng = random.Random(1)
    tests = tuple(
        ObservedTest(
            tid,
            tid.split("/")[1][:12],
            CLEAN if rng.random() > 0.01 else TestCounts(RUNS, RUNS - 1, 1, 0, 1, 1),
        )
        for tid in ids
    )
    return Observed(tests, tuple(SuiteRun(k, 2, 0, True) for k in range(1, RUNS + 1)), ())


def ours(path: Path, observed: Observed, window: int) -> tuple[dict[str, str], int]:
    previous = read_history_file(path) or ()
    night = night_of(observed, "tonight")
    report = build_stability(observed, night, previous, StabilitySettings(window=window))
    markdown = render_stability_markdown(report)
    write_history_file(path, add_night(previous, night, keep=window))
    return {t.test_id: t.status.value for t in report.tests}, len(markdown)


def naive_dump(path: Path, nights: list[Night]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for night in nights:
            odd = dict(night.odd)
            tests = {tid: list(odd.get(tid, night.clean).as_tuple()) for tid in night.present}
            fh.write(json.dumps({"night": night.label, "runs": list(night.runs), "tests": tests}) + "\n")


def naive(path: Path, observed: Observed) -> dict[str, str]:
    per_test: dict[str, list[TestCounts | None]] = {}
    nights = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for index, night in enumerate(nights):
        for tid, counts in night["tests"].items():
            per_test.setdefault(tid, [None] * len(nights))[index] = TestCounts(*counts)
    statuses = {}
    for test in observed.tests:
        history = per_test.get(test.test_id, [])
        statuses[test.test_id] = classify_stability(test.counts, history).value
        sum(c.runs for c in history if c), sum(c.bad for c in history if c)  # the window totals
    return statuses


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def traced_peak(fn, *args) -> int:  # type: ignore[no-untyped-def]
    """Peak Python allocation of one more call (tracemalloc slows it several-fold, so not timed)."""
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--tests", type=int, default=5000)
    args = parser.parse_args()
    ids, nights = synthetic_nights(args.nights, args.tests)
    observed = tonight(ids)
    with tempfile.TemporaryDirectory() as tmp:
        compact, keyed = Path(tmp) / "history.jsonl", Path(tmp) / "keyed.jsonl"
        write_history_file(compact, nights)
        naive_dump(keyed, nights)
        compact_bytes, keyed_bytes = compact.stat().st_size, keyed.stat().st_size
        (statuses, md_chars), ours_s = timed(ours, compact, observed, args.nights + 1)
        naive_statuses, naive_s = timed(naive, keyed, observed)
        write_history_file(compact, nights)
        ours_peak = traced_peak(ours, compact, observed, args.nights + 1)
    assert statuses == naive_statuses, "the two implementations disagree"
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    print(f"history: {args.nights} nights × {args.tests} tests, {RUNS} runs per night; window = all nights")
    print(f"statuses tonight: {dict(sorted(counts.items()))}; markdown {md_chars} chars")
    print(f"file size: ours {compact_bytes / 1e6:.2f} MB, keyed-by-node-id JSON lines {keyed_bytes / 1e6:.1f} MB "
          f"({keyed_bytes / compact_bytes:.0f}× larger)")  # fmt: skip
    print(
        f"ours  (read + stability + render + write): {ours_s:.2f} s, peak {ours_peak / 1e6:.0f} MB (tracemalloc)"
    )
    print(f"naive (read + expand + walk, no render):   {naive_s:.2f} s")
    print(f"ratio naive/ours: {naive_s / ours_s:.1f}×; target < 5 s: {'met' if ours_s < 5 else 'MISSED'} "
          f"({ours_s / 5 * 100:.0f} % of the budget)")  # fmt: skip


if __name__ == "__main__":
    main()
