"""db-test-action: run pytest suites against a throwaway PostgreSQL and explain what broke."""

from __future__ import annotations

from db_test_action.errors import DbTestActionError

__version__ = "0.1.0"

__all__ = ["DbTestActionError", "__version__"]
