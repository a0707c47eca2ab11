"""pytest plugin (entry point `db_test_action`), inert unless asked for.

The hooks live in three modules with separate jobs and are re-exported here, because pytest registers
the hook functions found on the entry-point module:
- plugin_junit: records shard/run/attempt/worker as JUnit properties when the runner sets them;
- plugin_db: one database per xdist worker, cloned from a template (`--db-per-worker`);
- plugin_quarantine: known-flaky tests reported but not failing (`--quarantine FILE`).
- plugin.stream: every test event as a JSON line beside the JUnit file, so results survive a kill.
"""

from db_test_action.plugin.db import *  # noqa: F403
from db_test_action.plugin.quarantine import *  # noqa: F403
from db_test_action.plugin.results import *  # noqa: F403
from db_test_action.plugin.stream import *  # noqa: F403
