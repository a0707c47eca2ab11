"""Run small real pytest suites in a subprocess and return the JUnit XML they wrote (no hand-made XML)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run_pytest(
    folder: Path,
    files: dict[str, str],
    *args: str,
    junit: str = "junit.xml",
    env: dict[str, str] | None = None,
) -> Path:
    """Write `files` (name → source) into `folder`, run pytest there, return the JUnit path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    out = folder / junit
    run_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITHUB_", "DB_TEST_ACTION_"))
    }
    run_env.update(env or {})
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={out}", *args]
    proc = subprocess.run(cmd, cwd=folder, env=run_env, capture_output=True, text=True, timeout=300)
    assert out.is_file(), f"pytest wrote no JUnit (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return out


PHASES_SUITE = {
    "conftest.py": """
        import pytest

        @pytest.fixture
        def broken_setup():
            raise RuntimeError("setup exploded: could not connect to server: Connection refused")

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("cannot drop table orders because other objects depend on it")
    """,
    "tests/test_phases.py": """
        import pytest

        def test_passes():
            pass

        def test_fails():
            assert 1 + 1 == 3, "arithmetic is broken"

        def test_setup_error(broken_setup):
            pass

        def test_teardown_error(broken_teardown):
            pass

        def test_fails_and_teardown_error(broken_teardown):
            assert False, "body failed too"

        @pytest.mark.skip(reason="not here")
        def test_skipped():
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert False

        @pytest.mark.xfail(reason="fixed already?")
        def test_xpass():
            pass

        class TestGroup:
            @pytest.mark.parametrize("n", [1, 2])
            def test_param(self, n):
                assert n != 2
    """,
}

FLAKY_SUITE = {
    "tests/test_retry.py": """
        from pathlib import Path

        def test_flaky_once():
            marker = Path(__file__).parent / "flaky.marker"
            if not marker.exists():
                marker.write_text("1")
                raise AssertionError("first attempt fails")

        def test_always_fails():
            assert False, "never works"

        def test_fine():
            pass
    """,
}
