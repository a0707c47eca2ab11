"""Shard balance: makespan / ideal of our split vs pytest-split's algorithms, predicted and real.

(a) the example suite's real durations (two real runs: split on the first, scored on the second);
(b) synthetic long-tail suites of 200 and 5,000 tests (split on one draw, scored on a noisy second);
(c) real wall clock of actual 4-shard runs of the example suite, each shard a whole `db-test-action run`
    (server start, collection, database creation, fixtures): slowest shard / mean shard.

Also counts modules split across shards (each split pays its module-scoped fixtures again).
Run: python benchmarks/shard_balance.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

from pytest_split.algorithms import Algorithms

from db_test_action.junit.files import expand_paths, parse_junit_file
from db_test_action.run.sharding import durations_from_occurrences, estimate_durations, scope_of, split_tests

ROOT = Path(__file__).resolve().parent.parent
Item = namedtuple("Item", "nodeid")
SHARDS = 4


def _groups_ours(ids, durations, shards, group=True):
    return [list(s.node_ids) for s in split_tests(ids, durations, shards, group_scopes=group).shards]


def _groups_split(algo, ids, durations, shards):
    return [[i.nodeid for i in g.selected] for g in algo.value(shards, [Item(n) for n in ids], durations)]


def _score(groups, truth, ids):
    est = estimate_durations(ids, truth)
    loads = [sum(est[n] for n in g) for g in groups]
    ideal = sum(loads) / len(loads)
    modules_split = sum(
        1
        for m in {scope_of(n, "module") for n in ids}
        if sum(any(scope_of(n, "module") == m for n in g) for g in groups) > 1
    )
    return max(loads) / ideal, min(len(g) for g in groups), modules_split


def compare(label, ids, plan, truth, shards=SHARDS):
    rows = {
        "db-test-action": _groups_ours(ids, plan, shards),
        "db-test-action (no scope groups)": _groups_ours(ids, plan, shards, group=False),
        "pytest-split least_duration": _groups_split(Algorithms.least_duration, ids, plan, shards),
        "pytest-split duration_based_chunks": _groups_split(
            Algorithms.duration_based_chunks, ids, plan, shards
        ),
    }
    print(f"\n{label}: {len(ids)} tests, {shards} shards (split on one set, scored on another)")
    for name, groups in rows.items():
        ratio, smallest, split_modules = _score(groups, truth, ids)
        print(
            f"  {name:36s} makespan/ideal {ratio:.4f}  smallest shard {smallest:4d} tests  modules split {split_modules}"
        )


def synthetic(n, seed):
    rng = random.Random(seed)
    ids, plan = [], {}
    per_module = 25
    for i in range(n):
        node = f"tests/test_m{i // per_module}.py::test_{i}"
        ids.append(node)
        # long tail: most tests ~50 ms, 2% of them 2-20 s; the second set is the first with 20% noise per test
        plan[node] = rng.lognormvariate(-3.0, 1.0) + (rng.random() < 0.02) * rng.uniform(2, 20)
    truth = {k: v * rng.lognormvariate(0, 0.2) for k, v in plan.items()}
    return ids, plan, truth


def _run(results, *args):
    cmd = [sys.executable, "-m", "db_test_action", "run", "--results-dir", str(results), *args]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True)
    return time.perf_counter() - start


def real_durations(tmp):
    sets = []
    for k in (1, 2):
        results = tmp / f"serial-{k}"
        _run(results, "--", "examples/robust", "-q")
        files, _ = expand_paths([str(results)])
        sets.append(durations_from_occurrences(o for f in files for o in parse_junit_file(f).occurrences))
    return sets


def _shard_args(i, durations_file):
    return [
        "--shards",
        str(SHARDS),
        "--shard",
        str(i),
        "--durations",
        str(durations_file),
        "--",
        "examples/robust",
    ]


def main():
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plan, truth = real_durations(tmp)
        ids = sorted(plan)
        compare("(a) example suite (robust), real durations", ids, plan, truth)
        for n, seed in ((200, 1), (5000, 2)):
            ids_n, plan_n, truth_n = synthetic(n, seed)
            compare("(b) synthetic long tail", ids_n, plan_n, truth_n)
        durations_file = tmp / "durations.json"
        durations_file.write_text(json.dumps(plan))
        walls = [_run(tmp / "sharded", *_shard_args(i, durations_file)) for i in range(1, SHARDS + 1)]
        mean = sum(walls) / len(walls)
        print(
            f"\n(c) real wall clock, {SHARDS} shards of examples/robust, each a whole `db-test-action run`:"
        )
        print(
            "  shard walls "
            + ", ".join(f"{w:.2f}s" for w in walls)
            + f"; makespan/ideal {max(walls) / mean:.3f}"
        )


if __name__ == "__main__":
    main()
