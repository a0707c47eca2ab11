"""pytest plugin (entry point `db_test_action`), inert unless asked for, and light to load.

pytest registers the hook functions found on the entry-point module, so the hooks of three modules with
separate jobs are re-exported here under unique names (pluggy's `specname`):
- results: records shard/run/attempt/worker as JUnit properties when the runner sets them;
- options: the `--db-*` options; `--db-per-worker` (plugin.db, imported only when on) gives each xdist
  worker its own database cloned from a template;
- quarantine: known-flaky tests reported but not failing (`--quarantine FILE`).
Importing this package loads only pytest, the standard library and the settings table.
"""

from db_test_action.plugin.options import *  # noqa: F403
from db_test_action.plugin.quarantine import *  # noqa: F403
from db_test_action.plugin.results import *  # noqa: F403
