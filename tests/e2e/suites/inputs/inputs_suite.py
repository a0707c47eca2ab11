"""A small suite for the action's inputs under act: what the server and DATABASE_URL look like from
inside pytest (written to $DTA_E2E_OUT/inputs/seen-<label>.json), and tests that fail on demand
(E2E_FAIL_OLD / E2E_FAIL_NEW) for the base-report regression gate."""

import json
import os
from pathlib import Path

import psycopg


def test_server_as_the_inputs_asked() -> None:
    url = os.environ["DATABASE_URL"]
    plain = "postgresql://" + url.split("://", 1)[1]
    with psycopg.connect(plain) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), current_setting('max_locks_per_transaction'), "
            "current_setting('TimeZone'), "
            "(SELECT datcollate FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    out = Path(os.environ["DTA_E2E_OUT"]) / "inputs"
    out.mkdir(parents=True, exist_ok=True)
    seen = {"url": url, "extra": os.environ.get("APP_DB_URL"), "row": list(row)}
    (out / f"seen-{os.environ.get('E2E_LABEL', 'main')}.json").write_text(json.dumps(seen))


def test_old() -> None:
    assert os.environ.get("E2E_FAIL_OLD") != "1", "an old failure, already failing on the base branch"


def test_new() -> None:
    assert os.environ.get("E2E_FAIL_NEW") != "1", "a new failure"
