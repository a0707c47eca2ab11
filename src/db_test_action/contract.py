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
# `db-test-action doctor`: record each attempt's fixture spans (the `fixtures` JUnit property).
ENV_FIXTURES = "DB_TEST_ACTION_PLUGIN_FIXTURES"
RUNNER_ENV = (ENV_SHARD, ENV_RUN, ENV_SELECT, ENV_COLLECT, ENV_PROGRESS, ENV_FIXTURES)
PROPERTY_NAMES = ("shard", "run", "attempt", "worker")
MAIN_WORKER = "main"  # the `worker` value without xdist


def application_name(worker: str, node_id: str) -> str:
    """`<worker> <node id>` within PostgreSQL's 63-byte limit, never cutting a UTF-8 character."""
    return f"{worker} {node_id}".encode()[:63].decode("utf-8", errors="ignore")
