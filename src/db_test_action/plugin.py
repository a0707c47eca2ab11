"""pytest plugin (entry point `db_test_action`), inert unless asked for.

The hooks live in two modules with separate jobs and are re-exported here, because pytest registers
the hook functions found on the entry-point module:
- plugin_junit: records shard/run/attempt/worker as JUnit properties when the runner sets them;
- plugin_db: one database per xdist worker, cloned from a template (`--db-per-worker`).
"""

from db_test_action.plugin_db import *  # noqa: F403
from db_test_action.plugin_junit import *  # noqa: F403
