"""What the runner and the pytest plugin agree on, kept apart so neither imports the other.

The runner (`db-test-action run`) talks to the plugin inside the user's pytest through environment
variables, because xdist workers inherit the environment but not options we would have to add to every
user's command line; both sides read the names from here. The server-log attribution reads the same
`application_name` format the plugin sets, so it lives here too.
"""

from __future__ import annotations

ENV_SHARD = "DB_TEST_ACTION_PLUGIN_SHARD"
ENV_RUN = "DB_TEST_ACTION_PLUGIN_RUN"
ENV_SELECT = "DB_TEST_ACTION_PLUGIN_SELECT"
ENV_COLLECT = "DB_TEST_ACTION_PLUGIN_COLLECT"
ENV_PROGRESS = "DB_TEST_ACTION_PLUGIN_PROGRESS"
# JSON lines, one event per line, appended as tests start and finish (survives a killed pytest): see
# plugin/stream.py for the events and junit/stream.py for the reader.
ENV_STREAM = "DB_TEST_ACTION_PLUGIN_STREAM"
# A directory where the runner acknowledges a per-test limit event once it has snapshotted the server.
ENV_LIMIT_ACKS = "DB_TEST_ACTION_PLUGIN_LIMIT_ACKS"
# `db-test-action doctor`: record each attempt's fixture spans (the `fixtures` JUnit property).
ENV_FIXTURES = "DB_TEST_ACTION_PLUGIN_FIXTURES"
RUNNER_ENV = (ENV_SHARD, ENV_RUN, ENV_SELECT, ENV_COLLECT, ENV_PROGRESS, ENV_STREAM, ENV_FIXTURES)
PROPERTY_NAMES = ("shard", "run", "attempt", "worker")
MAIN_WORKER = "main"  # the `worker` value without xdist
# Our own connections (create/drop databases, extensions): the report leaves them out when it looks for
# databases the suite used instead of the fresh one.
TOOL_APP = "db-test-action"


def application_name(worker: str, node_id: str) -> str:
    """`<worker> <node id>` within PostgreSQL's 63-byte limit, never cutting a UTF-8 character."""
    return f"{worker} {node_id}".encode()[:63].decode("utf-8", errors="ignore")


def stream_name(junit_name: str) -> str:
    """`shard-1-run-2.xml` → `shard-1-run-2.jsonl`: the results stream lives beside its JUnit file."""
    return junit_name.removesuffix(".xml") + ".jsonl"


def hang_name(junit_name: str) -> str:
    """`shard-1-run-2.xml` → `shard-1-run-2.hang.json`: the server snapshots taken at a time limit."""
    return junit_name.removesuffix(".xml") + ".hang.json"


def split_application_name(value: str) -> tuple[str, str] | None:
    """(worker, node id) from an `application_name` the plugin set, or None for anybody else's."""
    worker, sep, node = value.partition(" ")
    if not sep or not node or "::" not in node:
        return None
    return worker, node
