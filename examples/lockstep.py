"""Deterministic interleavings of two xdist workers that share one database (the fragile suite only).

On CI the fragile suite's collisions happen by chance — a few times a week, in different tests. For a
demo that tells the same story on every machine, this module decides *which* tests meet and *when* the
two workers' fixture steps run relative to each other; it never touches the database itself, so every
error in the report is a real PostgreSQL error caused by the fixtures' anti-patterns. The robust suite
does not need it: with a database per worker nothing two workers do can collide, whatever the timing.

How, by construction rather than timing luck:

- `RoundRobinScheduling` (the conftest's `pytest_xdist_make_scheduler`) hands out the whole collection
  up front, alternately: gw0 runs tests 0, 2, 4 …, gw1 runs 1, 3, 5 … — the same on any machine.
- Each database test of a worker is a *slot*; a worker's k-th slot pairs with the other worker's k-th
  (or runs alone once the other worker has finished). Slots run one after another (slot k starts when
  every earlier slot has ended), so outside the choreographed pairs the database sees one test at a time.
- Within a pair a *scenario* orders the steps of both fixtures (A = gw0's test, B = gw1's), with barriers
  (files) between them:

  - calm:    all of A, then all of B — nothing collides;
  - crypto:  B's CREATE OR REPLACE FUNCTION runs while A's is uncommitted; A commits once B is blocked
             on the catalog row → B: "tuple concurrently updated";
  - pkey:    B sets up while A's test still holds the fixed workspace → B: UniqueViolation workspaces_pkey;
  - cascade: A tears down after B created its extra table → A: DependentObjectsStillExist (drop_all),
             then B: UniqueViolation (A's rolled-back drop left the fixed workspace behind).

Which pairs collide is fixed: crypto in pair 1, pkey in pair 3, cascade in pair 5 on odd runs and pair 6
on even runs (`DB_TEST_ACTION_PLUGIN_RUN`), so every session shows all three errors, the same tests hit
by crypto and pkey in every run, and the cascade's tests failing in one run and passing in the next —
flaky, as on CI, but reproducibly. Active only with exactly two xdist workers; otherwise every call is
a no-op and the suite runs as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from xdist.scheduler import LoadScheduling

STEPS = ("replace_functions", "create_all", "extra_table", "workspace", "drop_extra", "drop_all")
# Pair index → scenario; the cascade moves by one pair between odd and even runs (see the docstring).
FIXED = {1: "crypto", 3: "pkey"}
CASCADE_AT = (5, 6)
# Only a partner that vanished (a crashed worker) hits these: generous, so a loaded machine never does.
STEP_TIMEOUT_S = 120.0

_A = [("A", s) for s in STEPS]
_B = [("B", s) for s in STEPS]
# Each entry may start once every earlier entry is done; ("B", "replace_functions", "blocked") is
# satisfied once B has started that step and is waiting on a lock inside PostgreSQL.
SCENARIOS: dict[str, list[tuple[str, ...]]] = {
    "calm": [*_A, *_B],
    "crypto": [_A[0], ("B", "replace_functions", "blocked"), *_A[1:], *_B[1:]],
    "pkey": [*_A[:4], *_B[:4], *_A[4:], *_B[4:]],
    "cascade": [*_A[:5], *_B[:3], _A[5], *_B[3:]],
}


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "")


class Lockstep:
    """One per worker process; `from_env()` is None unless exactly two xdist workers run."""

    def __init__(self, directory: Path, seed: str) -> None:
        self.dir = directory
        self.seed = seed
        self.me = _worker()
        self.slot: int | None = None
        self.slots_begun = 0
        self.role = "A" if self.me == "gw0" else "B"
        self.other = "gw1" if self.me == "gw0" else "gw0"
        self.scenario = "solo"
        self.run = int(os.environ.get("DB_TEST_ACTION_PLUGIN_RUN") or 1)
        self.dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_env(cls) -> Lockstep | None:
        run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        if os.environ.get("PYTEST_XDIST_WORKER_COUNT") != "2" or not run_id:
            return None
        return cls(Path(tempfile.gettempdir()) / f"lockstep-{run_id}", run_id)

    # --- shared state, guarded by a file lock -----------------------------------------------------

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict]:
        with open(self.dir / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.dir / "state.json"
            before = path.read_text() if path.exists() else '{"slots": [], "gone": []}'
            state = json.loads(before)
            yield state
            after = json.dumps(state)
            if after != before:
                path.write_text(after)

    def _mark(self, name: str) -> None:
        (self.dir / f"{self.slot}-{name}").touch()
        if os.environ.get("LOCKSTEP_DEBUG"):  # timeline of steps, for debugging the choreography
            with open(self.dir / "debug.log", "a") as fh:
                fh.write(f"{time.monotonic():.3f} {self.me} slot {self.slot} {self.scenario} {name}\n")

    def _has(self, name: str) -> bool:
        return (self.dir / f"{self.slot}-{name}").exists()

    # --- slots ------------------------------------------------------------------------------------

    def begin(self) -> None:
        """Take this worker's next slot, wait for the other worker's slot of the same number (or its end),
        then until every earlier slot has ended."""
        self.slot = self.slots_begun
        self.slots_begun += 1
        with self._state() as state:
            slots = state["slots"]
            while len(slots) <= self.slot:
                slots.append({"members": [], "ended": []})
            slots[self.slot]["members"].append(self.me)
        self._wait(self._partner_here_or_gone, "the partner's slot")
        with self._state() as state:
            paired = len(state["slots"][self.slot]["members"]) == 2
        self.scenario = self._scenario(self.slot) if paired else "solo"
        self._wait(self._earlier_slots_ended, "earlier slots")

    def _partner_here_or_gone(self) -> bool:
        with self._state() as state:
            return len(state["slots"][self.slot]["members"]) == 2 or self.other in state["gone"]

    def _earlier_slots_ended(self) -> bool:
        with self._state() as state:
            return all(len(s["ended"]) == len(s["members"]) for s in state["slots"][: self.slot])

    def _scenario(self, pair_index: int) -> str:
        # Not the very first pair: on a fresh database the functions do not exist yet, and two concurrent
        # CREATEs collide on pg_proc's unique index instead of "tuple concurrently updated".
        if pair_index == CASCADE_AT[(self.run - 1) % len(CASCADE_AT)]:
            return "cascade"
        return FIXED.get(pair_index, "calm")

    def end(self) -> None:
        """This worker's part of the slot is over (normally, or because a setup step failed)."""
        if self.slot is None:
            return
        for step in STEPS:
            self._mark(f"{self.role}.{step}.done")
        with self._state() as state:
            state["slots"][self.slot]["ended"].append(self.me)
        self.slot = None

    def gone(self) -> None:
        """This worker has finished; the last one to go removes the shared directory."""
        with self._state() as state:
            state["gone"].append(self.me)
            last = set(state["gone"]) >= {self.me, self.other}
        if last:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- steps ------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def step(self, name: str, conn: AsyncConnection | None = None) -> AsyncIterator[None]:
        """Run the body when the scenario says it is this step's turn; mark it done afterwards."""
        if self.slot is None or self.scenario == "solo":
            yield
            return
        order = SCENARIOS[self.scenario]
        index = next((i for i, e in enumerate(order) if e[:2] == (self.role, name)), None)
        if index is not None:
            for entry in order[:index]:
                await self._await_entry(entry, conn)
        # Steps of this role that were skipped (a test without the workspace fixture) count as done.
        for earlier in STEPS[: STEPS.index(name)]:
            self._mark(f"{self.role}.{earlier}.done")
        self._mark(f"{self.role}.{name}.started")
        try:
            yield
        finally:
            self._mark(f"{self.role}.{name}.done")

    async def _await_entry(self, entry: tuple[str, ...], conn: AsyncConnection | None) -> None:
        role, step = entry[0], entry[1]
        if len(entry) == 2:
            await self._async_wait(lambda: self._has(f"{role}.{step}.done"), f"{role}.{step}")
            return
        await self._async_wait(
            lambda: self._has(f"{role}.{step}.started") or self._has(f"{role}.{step}.done"), f"{role}.{step}"
        )
        if conn is None or self._has(f"{role}.{step}.done"):
            return
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline and not self._has(f"{role}.{step}.done"):
            waiting = await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
            if waiting:
                return
            await asyncio.sleep(0.002)

    async def _async_wait(self, ready, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"lockstep: partner never reached {what} in slot {self.slot}")
            await asyncio.sleep(0.001)

    def _wait(self, ready, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"lockstep: {what} never ended before slot {self.slot}")
            time.sleep(0.002)


class RoundRobinScheduling(LoadScheduling):
    """xdist's load scheduling, but the whole collection is handed out up front and alternately (gw0 gets
    tests 0, 2, 4 …, gw1 gets 1, 3, 5 …), so which tests meet in a pair does not depend on timing."""

    def schedule(self) -> None:
        if self.collection is not None:
            return super().schedule()
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = next(iter(self.node2collection.values()))
        nodes = sorted(self.nodes, key=lambda node: node.gateway.id)
        self.pending[:] = []
        for i, node in enumerate(nodes):
            mine = list(range(i, len(self.collection), len(nodes)))
            if mine:
                self.node2pending[node].extend(mine)
                node.send_runtest_some(mine)
        for node in nodes:
            node.shutdown()
        return None
