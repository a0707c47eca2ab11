"""The runner's server snapshots at a time limit → `Hang`s: which test waited, on what, held by whom. Pure.

A snapshot (`shard-I-run-K.hang.json`, written by run/hangs.py) lists the run's sessions with their
`application_name` (`<worker> <node id>`, set by the plugin when the session was opened), state,
statement, transaction start and `pg_blocking_pids()`. The results stream (junit/stream.py) says which
tests never finished and when each test's fixtures and body started. Together: "`test_b` (gw1) waits for
a row lock held by `test_a` (gw0), idle in transaction since its fixture `seed` ran".

Untrusted input: the snapshot file comes from an artifact; anything malformed is a named problem and is
skipped, never an exception. Both clocks are the same machine's for a server of ours; an external
server's clock may differ, which only shifts the "since" phrase.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from db_test_action.contract import split_application_name
from db_test_action.junit.parse import _shard_run_from_name
from db_test_action.junit.stream import StreamEvent, StreamFile
from db_test_action.model import Hang, ParseProblem

REASONS = {"suite-timeout": "the suite time limit", "test-timeout": "the per-test time limit"}


@dataclass(frozen=True, slots=True)
class Backend:
    pid: int
    application_name: str
    state: str
    wait_event_type: str
    wait_event: str
    query: str
    xact_start: float | None
    query_start: float | None
    blocked_by: tuple[int, ...]
    waiting_for: tuple[tuple[str, str, str], ...]  # (locktype, mode, relation)
    holding: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    source: str
    shard: int | None
    run: int | None
    reason: str
    limit_s: float
    test: str | None
    taken_at: float
    backends: tuple[Backend, ...]
    error: str | None


def parse_snapshots(text: str, name: str) -> tuple[tuple[Snapshot, ...], tuple[ParseProblem, ...]]:
    shard, run = _shard_run_from_name(name)
    try:
        data = json.loads(text)
    except ValueError:
        return (), (
            ParseProblem(name, "not JSON (a hang snapshot file); regenerate it with `run --timeout`"),
        )
    if not isinstance(data, list):
        return (), (ParseProblem(name, "not a list of snapshots; regenerate it with `run --timeout`"),)
    snapshots, problems = [], []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or item.get("reason") not in REASONS:
            problems.append(
                ParseProblem(name, f"snapshot {i + 1} is not a snapshot the runner wrote; skipped")
            )
            continue
        raw_backends = item.get("backends")
        backends = [_backend(b) for b in raw_backends] if isinstance(raw_backends, list) else []
        snapshots.append(
            Snapshot(
                source=name,
                shard=shard,
                run=run,
                reason=item["reason"],
                limit_s=_num(item.get("limit_s")) or 0.0,
                test=_str(item.get("test"), 2000) or None,
                taken_at=_num(item.get("taken_at")) or 0.0,
                backends=tuple(b for b in backends if b is not None),
                error=_str(item.get("error"), 300) or None,
            )
        )
    return tuple(snapshots), tuple(problems)


def _backend(raw: object) -> Backend | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("pid"), int):
        return None
    waits = raw.get("waiting_for") if isinstance(raw.get("waiting_for"), list) else []
    blocked = raw.get("blocked_by") if isinstance(raw.get("blocked_by"), list) else []
    holding = raw.get("holding") if isinstance(raw.get("holding"), list) else []
    return Backend(
        pid=raw["pid"],
        application_name=_str(raw.get("application_name"), 200),
        state=_str(raw.get("state"), 60),
        wait_event_type=_str(raw.get("wait_event_type"), 60),
        wait_event=_str(raw.get("wait_event"), 60),
        query=_str(raw.get("query"), 2000),
        xact_start=_num(raw.get("xact_start")),
        query_start=_num(raw.get("query_start")),
        blocked_by=tuple(p for p in blocked if isinstance(p, int) and not isinstance(p, bool)),
        waiting_for=tuple(
            (_str(w.get("locktype"), 40), _str(w.get("mode"), 40), _str(w.get("relation"), 200))
            for w in waits
            if isinstance(w, dict)
        ),
        holding=tuple(_str(h, 200) for h in holding if isinstance(h, str))[:10],
    )


# --- attribution -------------------------------------------------------------------------------------


def find_hangs(snapshots: Sequence[Snapshot], streams: Sequence[StreamFile]) -> tuple[Hang, ...]:
    by_run = {(s.shard, s.run): s for s in streams}
    hangs: list[Hang] = []
    for snap in snapshots:
        stream = by_run.get((snap.shard, snap.run))
        hangs += _snapshot_hangs(snap, stream.events if stream else (), stream.unfinished if stream else ())
    return tuple(hangs)


def _snapshot_hangs(
    snap: Snapshot, events: Sequence[StreamEvent], unfinished: Sequence[StreamEvent]
) -> list[Hang]:
    known = {e.node for e in events}
    base = {"reason": snap.reason, "limit_s": snap.limit_s, "shard": snap.shard, "run": snap.run}
    if snap.error:
        return [Hang(**base, test_id=snap.test, worker=None, note=f"no server snapshot: {snap.error}")]
    by_pid = {b.pid: b for b in snap.backends}
    owner = {b.pid: _owner(b.application_name, known) for b in snap.backends}
    hangs: list[Hang] = []
    for b in snap.backends:
        if not b.blocked_by:
            continue
        test, worker = owner[b.pid]
        holder = by_pid.get(b.blocked_by[0])
        holder_test, holder_worker = owner.get(b.blocked_by[0], (None, None))
        if snap.test and snap.test not in (test, holder_test):
            continue  # a per-test snapshot answers for that test: as the waiter, or as the holder
        since = holder.xact_start if holder else None
        hangs.append(
            Hang(
                **base,
                test_id=test,
                worker=worker,
                statement=b.query,
                waiting_on=_waiting_on(b),
                waited_s=_age(snap.taken_at, b.query_start),
                running_s=_running(test, worker, snap.taken_at, events),
                holder_test=holder_test,
                holder_worker=holder_worker,
                holder_pid=b.blocked_by[0],
                holder_state=holder.state if holder else "",
                holder_since=since,
                **_doing(holder_test, holder_worker, since, events),
                holder_statement=holder.query if holder else "",
                holding=holder.holding if holder else (),
                note="" if holder else f"the holder (pid {b.blocked_by[0]}) is not a session of this run",
            )
        )
    named = {h.test_id for h in hangs}
    running = [snap.test] if snap.test else [e.node for e in unfinished]
    for test in running:
        if test in named:
            continue
        starts = [e for e in events if e.kind == "start" and e.node == test and e.at <= snap.taken_at]
        worker = max(starts, key=lambda e: e.at).worker if starts else None
        idle = [
            b for b in snap.backends if owner[b.pid][0] == test and b.state.startswith("idle in transaction")
        ]
        own = idle[0] if idle else None
        hangs.append(
            Hang(
                **base,
                test_id=test,
                worker=worker,
                running_s=_running(test, worker, snap.taken_at, events),
                holder_pid=own.pid if own else None,
                holder_state=own.state if own else "",
                holder_since=own.xact_start if own else None,
                **(_doing(test, worker, own.xact_start, events) if own else {}),
                holder_statement=own.query if own else "",
                holding=own.holding if own else (),
            )
        )
    return hangs


def _owner(app: str, known: set[str]) -> tuple[str | None, str | None]:
    """(node id, worker) from `<worker> <node id>`; a node id cut at 63 bytes is completed from the stream."""
    split = split_application_name(app)
    if split is None:
        return None, None
    worker, node = split
    if node not in known:
        longer = sorted(k for k in known if k.startswith(node))
        node = longer[0] if len(longer) == 1 else node
    return node, worker


def _waiting_on(b: Backend) -> str:
    for locktype, mode, relation in b.waiting_for:
        if locktype in ("transactionid", "tuple"):
            return "a row lock" + (f" on {relation}" if relation else "")
        if locktype == "relation":
            return f"a {mode} on {relation or 'a table'}"
        if locktype == "advisory":
            return f"an advisory lock ({mode})"
        return f"a {locktype} lock ({mode})"
    if b.wait_event_type:
        return f"{b.wait_event_type}: {b.wait_event}"
    return "another session"


def _doing(
    test: str | None, worker: str | None, at: float | None, events: Sequence[StreamEvent]
) -> dict[str, str]:
    """What `test` was doing at `at`: the last of its start/fixture/call events before then."""
    if test is None or at is None:
        return {}
    before = [e for e in events if e.node == test and (worker is None or e.worker == worker) and e.at <= at]
    if not before:
        return {}
    last = max(before, key=lambda e: e.at)
    phase = {"fixture": "fixture", "call": "body"}.get(last.kind, "setup")
    return {"holder_since_phase": phase, "holder_since_fixture": last.detail if phase == "fixture" else ""}


def _running(test: str | None, worker: str | None, at: float, events: Sequence[StreamEvent]) -> float | None:
    starts = [
        e.at
        for e in events
        if e.kind == "start" and e.node == test and (worker is None or e.worker == worker)
    ]
    starts = [s for s in starts if s <= at]
    return round(at - max(starts), 3) if starts else None


def _age(now: float, then: float | None) -> float | None:
    return round(now - then, 3) if then and now >= then else None


def _str(value: object, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _num(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


# --- words ------------------------------------------------------------------------------------------


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S UTC")


def hang_sentence(h: Hang, name: Callable[[str], str], text: Callable[[str], str]) -> str:
    """One sentence. `name` formats test ids, fixtures and statements (code spans in Markdown), `text`
    any other untrusted words (lock and table names; escaped in Markdown)."""
    who = name(h.test_id) if h.test_id else "a session of this run"
    who += f" ({text(h.worker)})" if h.worker else ""
    limit = f"{REASONS.get(h.reason, 'a time limit')} of {h.limit_s:g} s"
    if h.note and not h.waiting_on:
        return f"{who} at {limit}: {text(h.note)}"
    if not h.waiting_on:
        ran = f"had run {h.running_s:.0f} s" if h.running_s is not None else "was running"
        out = f"{who} {ran} at {limit}, not waiting on the server"
        if h.holder_state:
            out += f"; its session is {text(h.holder_state)}{_since(h, name)}"
            out += f", holding locks on {text(', '.join(h.holding))}" if h.holding else ""
            out += f"; last statement {name(h.holder_statement)}" if h.holder_statement else ""
        return out
    out = f"{who} waits for {text(h.waiting_on)}"
    if h.holder_test:
        out += f" held by {name(h.holder_test)}" + (f" ({text(h.holder_worker)})" if h.holder_worker else "")
    elif h.holder_pid:
        out += f" held by pid {h.holder_pid}"
    if h.holder_state:
        out += f", {text(h.holder_state)}{_since(h, name)}"
    waited = f" for {h.waited_s:.0f} s" if h.waited_s is not None else ""
    out += f"; waiting{waited} in {name(h.statement)}" if h.statement else ""
    out += f", stopped at {limit}"
    if h.holder_statement:
        out += f"; the holder's last statement: {name(h.holder_statement)}"
    return out + (f"; {text(h.note)}" if h.note else "")


def _since(h: Hang, name: Callable[[str], str]) -> str:
    if not h.holder_since:
        return ""
    what = {
        "fixture": f"its fixture {name(h.holder_since_fixture)}",
        "body": "its test body",
        "setup": "its setup",
    }
    doing = what.get(h.holder_since_phase, "")
    return f" since {clock(h.holder_since)}" + (f", when {doing} ran" if doing else "")


def why_unfinished(hangs: Sequence[Hang]) -> dict[tuple[int | None, int | None, str], str]:
    """(shard, run, node) → the short reason a hung test's failure message carries."""
    out: dict[tuple[int | None, int | None, str], str] = {}
    for h in hangs:
        if h.test_id and (h.shard, h.run, h.test_id) not in out:
            out[(h.shard, h.run, h.test_id)] = hang_sentence(h, _plain, _plain)
    return out


def _plain(value: str) -> str:
    return " ".join(value.split())
