"""Where the plugin's settings come from inside pytest: the command line and the ini file, as lookups
for `config.resolve_plugin`. Shared by the light options module and the database half."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from db_test_action.errors import DbTestActionError


def option(config: pytest.Config) -> Callable[[str], object]:
    """Command-line values; before the conftests load only `known_args_namespace` is filled in."""

    def get(dest: str) -> object:
        value = config.getoption(dest, None)
        return getattr(config.known_args_namespace, dest, None) if value is None else value

    return get


def ini(config: pytest.Config) -> Callable[[str], object]:
    """Ini values; pytest's own type check failing (e.g. `db_per_worker = maybe`) is our one-line error."""
    hints = {"db_per_worker": "use true or false", "db_keep": "use true or false"}

    def get(key: str) -> object:
        try:
            return config.getini(key)
        except (TypeError, ValueError, pytest.UsageError) as exc:
            detail = str(exc).split(": config option ", 1)[-1].strip()
            raise DbTestActionError(f"{key} (ini): {detail}; {hints.get(key, 'use a string')}") from None

    return get
