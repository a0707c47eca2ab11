"""Every scalar setting in one table, and the one resolver every command and the pytest plugin use.

A setting's key is one word everywhere: the flag (`--comment-mode`), the action input (`comment-mode`),
the `[tool.db-test-action]` key and, upper-cased, the environment variable
(`DB_TEST_ACTION_COMMENT_MODE`); plugin settings are pytest ini keys too (`db_per_worker`).
Precedence, decided here and nowhere else:
- commands: flag > DB_TEST_ACTION_<KEY> > pyproject key > GitHub's own variable > default;
- the plugin: flag > ini key > DB_TEST_ACTION_<KEY> > default (pytest's own configuration comes first).
An empty environment variable counts as unset (an action input left at '' is "not given"). A bad value
raises one line naming where it came from and what would be valid. Nothing here reads the environment:
callers pass it in, so the argparse parsers can be built without touching it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from db_test_action.config import values as v
from db_test_action.errors import EXIT_USAGE, DbTestActionError

ENV_PREFIX = "DB_TEST_ACTION_"
TABLE = "tool.db-test-action"
# Defaults other modules use too: defined once, here.
DEFAULT_API_URL = "https://api.github.com"
DEFAULT_RETRIES = 4
DEFAULT_MAX_WAIT_S = 120.0
ANNOTATIONS_PER_LEVEL = 10  # GitHub shows at most 10 errors and 10 warnings per step
DEFAULT_LABEL = "db-test-action:stability"
DEFAULT_BRANCH = "db-test-action-history"
DEFAULT_HISTORY_PATH = "stability-history.jsonl"
DEFAULT_KEEP_NIGHTS = 90


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # kebab-case: flag, action input, pyproject key
    commands: tuple[str, ...]  # the commands that take it ("plugin" for the pytest plugin)
    parse: Callable[[object], Any]
    default: Any
    expected: str  # what a valid value looks like, for the error's fix part
    table: str | None = ""  # [tool.db-test-action] sub-table it may come from ("" = top); None: never a file
    github: str | None = None  # GitHub's own variable used when nothing else is given
    ini: str | None = None  # plugin settings: the pytest ini key and option dest (default: the dest)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        """The argparse dest and, for plugin settings, the pytest ini key."""
        return self.key.replace("-", "_")

    @property
    def ini_key(self) -> str:
        return self.ini or self.dest


_P, _R, _S, _PS = ("publish",), ("report",), ("stability",), ("publish", "stability")
_PLUGIN = ("plugin",)
_PR = ("postgres", "run")
_BOOL, _WHOLE, _COUNT, _SECS = (
    "true or false",
    "a whole number ≥ 1",
    "a whole number ≥ 0",
    "seconds ≥ 0, e.g. 120",
)
_ST = "stability"

SETTINGS: tuple[Setting, ...] = (
    # report
    Setting(
        "fail-on",
        _R,
        v.parse_fail_on,
        ("errors", "failures"),
        "errors, failures, budgets, flaky, regressions or none",
    ),
    Setting("title", _R, v.text, "Test results", "a string"),
    Setting("expect-files", _R, v.whole(1), None, _WHOLE),
    Setting("details-per-cause", _R, v.whole(1), 5, _WHOLE),
    # publish, and the GitHub side of stability
    Setting("report-json", _P, v.text, None, "a file from `report --json`", table=None),
    Setting("markdown", _P, v.text, None, "a Markdown file", table=None),
    Setting("key", _P, v.text, "tests", "a short word, e.g. unit", table=None),
    Setting(
        "comment-mode",
        _P,
        v.choice("off", "always", "changes", "failures"),
        "always",
        "off, always, changes or failures",
        table=None,
    ),
    Setting("pr", _P, v.whole(1), None, "a pull request number", table=None),
    Setting("event-file", _P, v.text, None, "a webhook payload file", table=None, github="GITHUB_EVENT_PATH"),
    Setting("comment-author", _P, v.text, None, "a login", table=None),
    Setting("max-annotations", _P, v.whole(0), ANNOTATIONS_PER_LEVEL, _COUNT, table=None),
    Setting("token", _PS, v.text, None, "a token", table=None, github="GITHUB_TOKEN"),
    Setting("repository", _PS, v.text, None, "OWNER/REPO", table=None, github="GITHUB_REPOSITORY"),
    Setting("api-url", _PS, v.text, DEFAULT_API_URL, "a URL", table=None, github="GITHUB_API_URL"),
    Setting("retries", _PS, v.whole(0), DEFAULT_RETRIES, _COUNT, table=None),
    # one overall deadline for the comment (connect, read and retry sleeps): finite, at most an hour
    Setting("max-wait", _PS, v.seconds_up_to(3600), DEFAULT_MAX_WAIT_S, _SECS, table=None),
    Setting("dry-run", _PS, v.parse_bool, False, _BOOL, table=None),
    Setting("fail-on-publish-error", _PS, v.parse_bool, False, _BOOL, table=None),
    # stability ([tool.db-test-action.stability] for what describes the suite, not the machine or token)
    Setting("history", _S, v.text, None, "a file path", table=None),
    Setting("history-artifact", _S, v.text, None, "an artifact name", table=None),
    Setting("history-branch", _S, v.text, None, f"a branch name, e.g. {DEFAULT_BRANCH}", table=_ST),
    Setting("history-path", _S, v.text, DEFAULT_HISTORY_PATH, "a path on the branch", table=_ST),
    Setting("keep-nights", _S, v.whole(1), DEFAULT_KEEP_NIGHTS, _WHOLE, table=_ST),
    Setting("night", _S, v.text, None, "a label such as 2026-12-01", table=None),
    Setting("commit", _S, v.text, "", "a commit SHA", table=None, github="GITHUB_SHA"),
    Setting("window", _S, v.whole(1), 14, _WHOLE, table=_ST),
    Setting("recover-after", _S, v.whole(1), 3, _WHOLE, table=_ST),
    Setting("require-consecutive", _S, v.whole(1), None, _WHOLE, table=_ST),
    Setting(
        "fail-on",
        _S,
        v.parse_stability_gates,
        ("consecutive",),
        "consecutive, broken, newly-flaky, flaky or none",
        table=_ST,
    ),
    # runs in one night: bounded, since the per-run table grows with it
    Setting(
        "expect-runs", _S, v.whole(1, maximum=10_000), None, "a whole number from 1 to 10000", table=None
    ),
    Setting("title", _S, v.text, "Nightly stability", "a string", table=_ST),
    Setting("tracking-issue", _S, v.parse_bool, False, _BOOL, table=None),
    Setting("label", _S, v.text, DEFAULT_LABEL, "a label name", table=_ST),
    Setting("issue-key", _S, v.text, "stability", "a short word", table=_ST),
    Setting("close-after", _S, v.whole(0), 3, _COUNT, table=_ST),
    # postgres / run: the server, and the URL the suite expects (docs/action-runtime.md)
    Setting("database-url", _PR, v.text, None, "a postgresql:// URL", table=None),
    Setting("user", _PR, v.text, "postgres", "a role name, e.g. app", table=None),
    Setting("password", _PR, v.text, None, "a password", table=None),
    Setting("port", _PR, v.port, None, "a port number, 1-65535", table=None),
    Setting("database", _PR, v.text, None, "a database name, e.g. app_test", table=None),
    Setting("locale", _PR, v.text, "C.UTF-8", "a locale, e.g. en_US.UTF-8"),
    Setting("server-settings", _PR, v.text, "", "name=value lines, e.g. max_locks_per_transaction=256"),
    Setting(
        "url-driver", _PR, v.text, "", "asyncpg, psycopg, psycopg2 or a scheme such as postgresql+asyncpg"
    ),
    Setting("db-url-env", _PR, v.text, "", "environment variable names, e.g. TEST_DATABASE_URL"),
    Setting("no-install", _PR, v.parse_bool, False, _BOOL, table=None),
    Setting("python", ("run",), v.text, None, "the project's Python executable", table=None),
    Setting("plugin-path", ("run",), v.text, None, "a directory holding db_test_action", table=None),
    Setting("db-per-worker", ("run",), v.parse_bool, False, _BOOL),
    Setting("db-setup", ("run",), v.text, "", "a command, module:function or .sql paths"),
    # the pytest plugin (ini keys db_*)
    Setting("db-per-worker", _PLUGIN, v.parse_bool, False, _BOOL, table=None),
    Setting("db-setup", _PLUGIN, v.text, None, "a command, module:function or .sql paths", table=None),
    Setting("db-extensions", _PLUGIN, v.names, (), "extension names, e.g. pgcrypto,citext", table=None),
    Setting("db-url-env", _PLUGIN, v.env_name, "DATABASE_URL", "an environment variable name", table=None),
    Setting("db-reset-mode", _PLUGIN, v.choice(*v.RESET_MODES), "truncate", "truncate or clone", table=None),
    Setting("db-keep", _PLUGIN, v.parse_bool, False, _BOOL, table=None),
    Setting(
        "quarantine",
        _PLUGIN,
        v.text,
        None,
        "a file from `stability --quarantine-out`",
        table=None,
        ini="db_quarantine",
    ),
)


def settings_for(command: str) -> tuple[Setting, ...]:
    return tuple(s for s in SETTINGS if command in s.commands)


def setting_for(command: str, key: str) -> Setting:
    """The setting `key` as `command` takes it (fail-on and title mean different things per command)."""
    for setting in settings_for(command):
        if setting.key == key:
            return setting
    raise KeyError(f"{command}: no setting {key!r}")


def default_text(command: str, key: str) -> str:
    """A setting's default as `--help` shows it, read from the table so help and behaviour cannot differ."""
    default = setting_for(command, key).default
    if isinstance(default, tuple):
        return ",".join(default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def table_keys(command: str, table: str) -> frozenset[str]:
    """The keys `command` reads from [tool.db-test-action] (table "") or one of its sub-tables."""
    return frozenset(s.key for s in settings_for(command) if s.table == table)


def show(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def parse_value(setting: Setting, raw: object, where: str) -> Any:
    try:
        return setting.parse(raw)
    except (ValueError, TypeError):
        raise DbTestActionError(
            f"{where}: {show(raw)} is not valid; use {setting.expected}", EXIT_USAGE
        ) from None


def first_source(candidates: Iterable[tuple[str, object]]) -> tuple[str, object] | None:
    """The first candidate (source label, raw value) that is given: None and blank strings are not given
    (an environment variable or action input left empty means "unset")."""
    for where, raw in candidates:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        return where, raw
    return None


def first_given(setting: Setting, candidates: Iterable[tuple[str, object]]) -> Any:
    """The first given candidate, parsed (errors name its source); else the setting's default."""
    found = first_source(candidates)
    return setting.default if found is None else parse_value(setting, found[1], found[0])


def _flag(flags: Mapping[str, object], setting: Setting) -> object:
    """A flag's value keyed by argparse dest (`fail_on`) or by the setting's key (`fail-on`)."""
    value = flags.get(setting.dest)
    return flags.get(setting.key) if value is None else value


def resolve(
    command: str,
    flags: Mapping[str, object],
    env: Mapping[str, str],
    table: Mapping[str, Any] | None = None,
    where: str = "pyproject.toml",
    tables: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every setting of `command`, by dest: flag > DB_TEST_ACTION_<KEY> > pyproject > GITHUB_* > default.

    `flags` maps dests to parsed-or-raw CLI values (None = not given); `table` is [tool.db-test-action]
    and `tables` its sub-tables by name (e.g. "stability"), each labelled in errors through `where`.
    """
    resolved: dict[str, Any] = {}
    for setting in settings_for(command):
        source: Mapping[str, Any] = {}
        label = where
        if setting.table == "":
            source = table or {}
        elif setting.table is not None:
            source = (tables or {}).get(setting.table, {})
            label = f"{where[:-1]}.{setting.table}]" if where.endswith("]") else f"{where} {setting.table}"
        resolved[setting.dest] = first_given(
            setting,
            (
                (f"--{setting.key}", _flag(flags, setting)),
                (setting.env, env.get(setting.env)),
                (f"{label} {setting.key}", source.get(setting.key)),
                (setting.github or "", env.get(setting.github) if setting.github else None),
            ),
        )
    return resolved


def plugin_candidates(
    cli: Callable[[str], object], ini: Callable[[str], object], env: Mapping[str, str], setting: Setting
) -> tuple[tuple[str, object], ...]:
    """The plugin's sources for one setting, in precedence order: flag > ini key > DB_TEST_ACTION_<KEY>."""
    return (
        (f"--{setting.key}", cli(setting.ini_key)),
        (f"{setting.ini_key} (ini)", ini(setting.ini_key)),
        (setting.env, env.get(setting.env)),
    )


def resolve_plugin(
    cli: Callable[[str], object], ini: Callable[[str], object], env: Mapping[str, str], keys: Iterable[str]
) -> dict[str, Any]:
    """The plugin's settings `keys` by ini key: flag > ini key > DB_TEST_ACTION_<KEY> > default."""
    resolved = {}
    for key in keys:
        setting = setting_for("plugin", key)
        resolved[setting.ini_key] = first_given(setting, plugin_candidates(cli, ini, env, setting))
    return resolved
