"""Deterministic interleavings of two xdist workers that share one database (the fragile suite only).

On CI the fragile suite's collisions happen by chance — a few times a week, in different tests. For a
reproducible demo this module decides *when* the two workers' fixture steps run relative to each other;
it never touches the database itself, so every error in the report is a real PostgreSQL error caused
by the fixtures' anti-patterns. The robust suite does not need it: with a database per worker nothing
two workers do can collide, whatever the timing.

How: each test of each worker is a *slot*. A worker starting a test joins the other worker's open slot
(a pair) or opens one and waits briefly for a partner; a slot without a partner runs alone. Slots run
one after another (a slot starts when every earlier slot has ended), so outside the choreographed
pairs the shared database sees one test at a time. Within a pair, a *scenario* orders the steps of both
fixtures (A = the worker that opened the slot, B = the one that joined):

- calm:    all of A, then all of B — nothing collides;
- crypto:  B's CREATE OR REPLACE FUNCTION runs while A's is uncommitted; A commits once B is blocked
           on the catalog row → B: "tuple concurrently updated";
- pkey:    B sets up while A's test still holds the fixed workspace → B: UniqueViolation workspaces_pkey;
- cascade: A tears down after B created its extra table → A: DependentObjectsStillExist (drop_all),
           then B: UniqueViolation (A's rolled-back drop left the fixed workspace behind).

Which pairs collide is drawn per session (seeded by xdist's test-run id, shared by both workers): three
collisions in every block of BLOCK pairs, so each kind appears in every session of a dozen tests or
more, in different tests from run to run — which is what makes them look flaky. Active only with
exactly two xdist workers; otherwise every call is a no-op and the suite runs as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

STEPS = ("replace_functions", "create_all", "extra_table", "workspace", "drop_extra", "drop_all")
BLOCK = 9
JOIN_WAIT_S = 0.3  # how long a worker waits for the other one to pair up
STEP_TIMEOUT_S = 10.0  # a partner that vanished must not hang the suite

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
        self.role = "A"
        self.scenario = "solo"
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
        """Join or open a slot, then wait until every earlier slot has ended."""
        with self._state() as state:
            slots = state["slots"]
            last = slots[-1] if slots else None
            if last and not last["closed"] and self.me not in last["members"]:
                last["members"].append(self.me)
                last["closed"] = True
                self.slot, self.role = len(slots) - 1, "B"
            else:
                slots.append({"members": [self.me], "closed": False, "ended": []})
                self.slot, self.role = len(slots) - 1, "A"
        deadline = time.monotonic() + JOIN_WAIT_S
        while self.role == "A":
            with self._state() as state:
                mine = state["slots"][self.slot]
                partner_gone = bool(set(state["gone"]) - {self.me})
                if mine["closed"] or partner_gone or time.monotonic() > deadline:
                    mine["closed"] = True
                    break
            time.sleep(0.002)
        with self._state() as state:
            paired = len(state["slots"][self.slot]["members"]) == 2
            pairs_before = sum(len(s["members"]) == 2 for s in state["slots"][: self.slot])
        self.scenario = self._scenario(pairs_before) if paired else "solo"
        self._wait(lambda: self._earlier_slots_ended(), "earlier slots")

    def _earlier_slots_ended(self) -> bool:
        with self._state() as state:
            return all(len(s["ended"]) == len(s["members"]) for s in state["slots"][: self.slot])

    def _scenario(self, pair_index: int) -> str:
        block, position = divmod(pair_index, BLOCK)
        # Not the very first pair: on a fresh database the functions do not exist yet, and two concurrent
        # CREATEs collide on pg_proc's unique index instead of "tuple concurrently updated".
        picks = random.Random(f"{self.seed}-{block}").sample(range(1 if block == 0 else 0, BLOCK), 3)
        kinds = ("crypto", "pkey", "cascade")
        return kinds[picks.index(position)] if position in picks else "calm"

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
        with self._state() as state:
            state["gone"].append(self.me)

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
        deadline = time.monotonic() + STEP_TIMEOUT_S * 3
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"lockstep: {what} never ended before slot {self.slot}")
            time.sleep(0.002)
