"""The docs cover what the code accepts, and state what the workflows really do.

Every name a user can type is read from where the code defines it — action inputs from action.yml,
reusable-workflow inputs from `.github/workflows/*.yml`, CLI flags from the argparse parsers, config keys
from `config.SETTINGS` and the nested tables, pytest options from `pytest --help` — and must be a Markdown
heading or the first cell of a table row (not merely mentioned somewhere) in the section of docs/ or the
README that is about it. A new flag therefore fails here until its row is written. The other way round,
defaults in the input tables and artifact names in the docs are compared with the workflow files, and
relative links must resolve.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

from db_test_action.cli import build_parser
from db_test_action.commands.stability import TABLE_KEYS
from db_test_action.config import report as report_config
from db_test_action.config import settings as config
from db_test_action.model import CauseRule

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = (README, *sorted(DOCS.glob("*.md")))
ACTION = ROOT / "action.yml"
REUSABLE = sorted(ROOT.glob(".github/workflows/*.yml"))
STARTERS = sorted(ROOT.glob("workflows/*.yml"))
EXPECTED_PAGES = ("cli", "configuration", "action", "server-evidence", "publishing", "stability", "plugin",
                  "performance", "contributing")  # fmt: skip
MATRIX_PLACEHOLDERS = {"shard": "S", "batch": "R"}  # how the docs spell a matrix value in an artifact name
SPAN = re.compile(r"`([^`]+)`")


# --- reading Markdown: headings, sections, table rows ----------------------------------------------------


@dataclass(frozen=True)
class Section:
    page: Path
    level: int
    heading: str
    lines: tuple[str, ...]  # the heading's content, subsections included


def _prose(path: Path) -> list[str]:
    """The page's lines with fenced code blocks blanked (a `# comment` in a YAML block is no heading)."""
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return out


@cache
def _sections(path: Path) -> tuple[Section, ...]:
    lines = _prose(path)
    heads = [
        (i, len(m[1]), m[2]) for i, line in enumerate(lines) if (m := re.match(r"^(#{1,6}) (.+)$", line))
    ]
    found = []
    for n, (i, level, heading) in enumerate(heads):
        end = next((j for j, lv, _ in heads[n + 1 :] if lv <= level), len(lines))
        found.append(Section(path, level, heading, tuple(lines[i:end])))
    return tuple(found)


def _sections_about(span: str, pages: tuple[Path, ...] = PAGES) -> list[Section]:
    """Sections whose heading holds the code span `span`, e.g. `db-test-action report`."""
    return [s for page in pages for s in _sections(page) if span in SPAN.findall(s.heading)]


def _rows(lines: tuple[str, ...] | list[str]) -> list[list[str]]:
    rows = []
    for line in lines:
        if line.startswith("|") and not re.fullmatch(r"\|[\s:|-]+\|?", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
    return rows


def _name(span: str) -> str:
    """`--report-json FILE` → --report-json; `--db-setup=SETUP` → --db-setup; `PATHS…` → PATHS…"""
    return re.split(r"[\s=]", span.strip(), maxsplit=1)[0]


def _documented(sections: list[Section]) -> set[str]:
    """Names given a heading or a table row's first cell in these sections."""
    names = set()
    for section in sections:
        for line in section.lines:
            if m := re.match(r"^#{1,6} (.+)$", line):
                names |= {_name(s) for s in SPAN.findall(m[1])}
        names |= {_name(s) for row in _rows(section.lines) for s in SPAN.findall(row[0])}
    return names


def _default_cell(value: object) -> str:
    """How an input table shows a default: `true`, `1`, `pgcrypto`; — for none."""
    if value is None or value == "":
        return "—"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"`{text}`"


def _input_rows(sections: list[Section]) -> dict[str, list[str]]:
    """Rows of the tables headed `| input | default | …`, by input name."""
    found: dict[str, list[str]] = {}
    for section in sections:
        header: list[str] = []
        for line in section.lines:
            if not line.startswith("|"):
                header = []
                continue
            (row,) = _rows([line]) or [[]]
            if not row:
                continue
            if not header:
                header = row
            elif header[:2] == ["input", "default"] and (spans := SPAN.findall(row[0])):
                found.setdefault(_name(spans[0]), row)
    return found


# --- what the code and the workflow files define -----------------------------------------------------------


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _workflow_call(path: Path) -> dict | None:
    on = _load(path).get(True) or _load(path).get("on")  # YAML 1.1 reads `on:` as True
    return on.get("workflow_call") if isinstance(on, dict) and "workflow_call" in on else None


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """`db-test-action` itself ("") and every subcommand, built the way the CLI builds them."""
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return {"": top, **sub.choices}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    """The options a user types: every long spelling (a short one only when there is no long one)."""
    flags = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        longs = [o for o in action.option_strings if o.startswith("--")]
        flags += longs or action.option_strings
    return flags


def _kebab(field: str) -> str:
    return field.removesuffix("_s").replace("_", "-")


@cache
def _pytest_help() -> str:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    }
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _plugin_options() -> tuple[list[str], list[str]]:
    """Our pytest options (the `db-test-action` group of `pytest --help`) and ini keys (`db_*`)."""
    text = _pytest_help()
    group = text.split("\ndb-test-action:\n", 1)[1].split("\n\n", 1)[0]
    options = re.findall(r"^  (--[\w-]+)", group, flags=re.M)
    ini = sorted(set(re.findall(r"^  (db_\w+) \(", text, flags=re.M)))
    return options, ini


def _render(template: str, inputs: dict) -> str:
    """An artifact name as the docs spell it: inputs at their defaults, matrix values as placeholders."""

    def value(m: re.Match[str]) -> str:
        kind, name = m[1], m[2]
        if kind == "inputs":
            return str(inputs[name]["default"])
        assert name in MATRIX_PLACEHOLDERS, f"say in MATRIX_PLACEHOLDERS how the docs spell matrix.{name}"
        return MATRIX_PLACEHOLDERS[name]

    rendered = re.sub(r"\$\{\{\s*(inputs|matrix)\.([\w-]+)\s*\}\}", value, template)
    assert "${{" not in rendered, f"cannot render {template!r}"
    return rendered


def _uploads() -> dict[str, tuple[str, str]]:
    """Every artifact the reusable workflows upload: rendered name → (template, workflow file)."""
    found = {}
    for path in REUSABLE:
        call = _workflow_call(path)
        if call is None:
            continue
        for job in _load(path)["jobs"].values():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("actions/upload-artifact@"):
                    template = step["with"]["name"]
                    found[_render(template, call.get("inputs", {}))] = (template, path.name)
    return found


# --- the tests -------------------------------------------------------------------------------------------------


def test_the_docs_pages_exist_and_the_readme_stays_short():
    assert {p.stem for p in DOCS.glob("*.md")} >= set(EXPECTED_PAGES)
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300
    readme = README.read_text(encoding="utf-8")
    for page in sorted({*EXPECTED_PAGES, *(p.stem for p in DOCS.glob("*.md"))}):
        assert f"(docs/{page}.md" in readme, f"README does not link docs/{page}.md"


def test_every_action_input_is_in_the_readme_and_docs_tables_with_its_real_default():
    inputs = _load(ACTION)["inputs"]
    for page in (README, DOCS / "action.md"):
        sections = _sections_about("action.yml", (page,))
        assert sections, f"{page.name}: no heading holds `action.yml`"
        where = page.name
        missing = sorted(set(inputs) - _documented(sections))
        assert not missing, f"{where}: action inputs without a table row: {missing}"
        rows = _input_rows(sections)
        for name, spec in inputs.items():
            assert rows[name][1] == _default_cell(spec["default"]), f"{where}: default of `{name}`"


def test_every_action_output_has_its_row():
    outputs = _load(ACTION)["outputs"]
    sections = _sections_about("action.yml", (DOCS / "action.md",))
    missing = sorted(set(outputs) - _documented(sections))
    assert not missing, f"action.md: action outputs without a table row: {missing}"


@pytest.mark.parametrize("path", [p for p in REUSABLE if _workflow_call(p) is not None], ids=lambda p: p.name)
def test_every_reusable_workflow_input_is_documented_with_its_real_default(path: Path):
    call = _workflow_call(path)
    sections = _sections_about(f".github/workflows/{path.name}")
    assert sections, f"no docs section whose heading names `.github/workflows/{path.name}`"
    inputs = call.get("inputs", {})
    missing = sorted(set(inputs) - _documented(sections))
    assert not missing, f"{path.name} inputs without a table row: {missing}"
    rows = _input_rows(sections)
    for name, spec in inputs.items():
        assert rows[name][1] == _default_cell(spec.get("default")), f"{path.name}: default of `{name}`"


@pytest.mark.parametrize("command", sorted(_parsers()), ids=lambda c: c or "db-test-action")
def test_every_cli_flag_is_documented_under_its_command(command: str):
    parser = _parsers()[command]
    span = f"db-test-action {command}".strip()
    sections = _sections_about(span)
    assert sections, f"no docs heading holds `{span}`"
    missing = [flag for flag in _flags(parser) if flag not in _documented(sections)]
    assert not missing, f"`{span}` flags without a table row or heading: {missing}"


def test_every_config_key_is_documented_in_its_table():
    tables = {
        "[tool.db-test-action]": [s.key for s in config.SETTINGS if s.table == ""],
        "[tool.db-test-action.budgets]": [_kebab(f.name) for f in dataclasses.fields(report_config.Budgets)],
        "[[tool.db-test-action.classes]]": [f.name for f in dataclasses.fields(CauseRule)],
        "[tool.db-test-action.stability]": sorted(
            TABLE_KEYS | {s.key for s in config.SETTINGS if s.table == "stability"}
        ),
        "[tool.db-test-action.categories]": [],  # keys are the user's category names: the heading is enough
    }
    assert len(tables["[tool.db-test-action]"]) >= 4 and len(tables["[tool.db-test-action.budgets]"]) >= 8
    for table, keys in tables.items():
        sections = _sections_about(table, (DOCS / "configuration.md",))
        assert sections, f"configuration.md has no heading `{table}`"
        missing = sorted(set(keys) - _documented(sections))
        assert not missing, f"{table} keys without a table row: {missing}"


def test_every_setting_has_its_row_in_the_settings_table():
    """config.SETTINGS, row by row: key, the commands that take it, its variable and its default."""
    (section,) = [s for s in _sections(DOCS / "configuration.md") if s.heading == "Every setting"]
    rows = [row for row in _rows(section.lines) if SPAN.findall(row[0])]
    assert len(config.SETTINGS) > 30
    for setting in config.SETTINGS:
        commands = ["pytest plugin" if c == "plugin" else f"`{c}`" for c in setting.commands]
        matching = [
            r for r in rows if SPAN.findall(r[0]) == [setting.key] and all(c in r[1] for c in commands)
        ]
        assert matching, f"configuration.md: no row for `{setting.key}` ({', '.join(setting.commands)})"
        row = matching[0]
        assert row[2] == f"`{setting.env}`", f"`{setting.key}`: environment variable"
        assert (setting.github or "—") in row[4], f"`{setting.key}`: GitHub variable"
        assert row[5] == _setting_default(setting.default), f"`{setting.key}` ({setting.commands}): default"


def _setting_default(value: object) -> str:
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "—"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _default_cell(value)


def test_every_pytest_option_and_ini_key_of_the_plugin_is_documented():
    options, ini = _plugin_options()
    assert "--db-per-worker" in options and "--quarantine" in options and "db_quarantine" in ini
    sections = list(_sections(DOCS / "plugin.md"))
    missing = [o for o in options if o not in _documented(sections)]
    assert not missing, f"plugin.md: pytest options without a table row: {missing}"
    cells = {
        _name(s) for row in _rows(_prose(DOCS / "plugin.md")) for cell in row for s in SPAN.findall(cell)
    }
    missing = [key for key in ini if key not in cells]
    assert not missing, f"plugin.md: ini keys in no table row: {missing}"


def test_artifact_names_in_the_docs_are_the_ones_the_workflows_upload():
    uploads = _uploads()
    assert "db-test-stability-run-R-shard-S" in uploads and "db-test-results-shard-S" in uploads
    # every upload has its row …
    documented = _documented(list(_sections(DOCS / "action.md")))
    missing = sorted(set(uploads) - documented)
    assert not missing, f"action.md: artifacts the workflows upload without a table row: {missing}"
    # … and every artifact name a page states is one of them (or a pattern matching one).
    prefixes = {
        str(spec["default"])
        for path in REUSABLE
        if (call := _workflow_call(path))
        for name, spec in call.get("inputs", {}).items()
        if "artifact" in name
    }
    stated = [
        (page.name, span)
        for page in PAGES
        for line in _prose(page)
        for span in SPAN.findall(line)
        if span.startswith("<artifact-prefix>") or any(span.startswith(f"{p}-") for p in prefixes)
    ]  # a `<artifact-prefix>-…` placeholder never matches: the docs spell names with the defaults
    wrong = [
        f"{page}: `{span}`" for page, span in stated if not any(fnmatch.fnmatchcase(n, span) for n in uploads)
    ]
    assert not wrong, f"artifact names no workflow uploads: {wrong}; uploads: {sorted(uploads)}"


@pytest.mark.parametrize("path", STARTERS, ids=lambda p: p.name)
def test_starter_workflows_download_artifacts_that_are_uploaded(path: Path):
    uploads = _uploads()
    for job in _load(path).get("jobs", {}).values():
        for step in job.get("steps", []) or []:
            if str(step.get("uses", "")).startswith("actions/download-artifact@"):
                pattern = step.get("with", {}).get("pattern") or step.get("with", {}).get("name")
                assert any(fnmatch.fnmatchcase(n, pattern) for n in uploads), f"{path.name}: {pattern}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path):
    text = "\n".join(_prose(page))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        assert dest.exists(), f"{page.name}: link to missing {target}"
        if anchor:
            assert dest.suffix == ".md", f"{page.name}: anchor into a non-Markdown file: {target}"
            anchors = {_slug(s.heading) for s in _sections(dest)}
            assert anchor in anchors, f"{page.name}: no heading for #{anchor} in {dest.name}"


def _readme_command(label: str) -> str:
    """The one-line command in the README's bash block after the paragraph starting with **label**."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index(f"**{label}**") :].split("```bash\n", 1)[1].split("\n```", 1)[0]
    (line,) = block.splitlines()
    return line


def test_ci_runs_the_readme_test_command_verbatim():
    command = _readme_command("The tests")
    assert (
        command
        == "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[test]' && python -m pytest"
    )
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in [line.strip() for line in ci]


def test_the_readme_demo_command_is_the_one_the_docs_describe():
    command = _readme_command("The demo")
    assert command.startswith(
        "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[examples]' && db-test-action run "
    )
    args = command.split(" && ")[3].split()
    flags = {a for a in args if a.startswith("--")}
    assert flags <= set(_flags(_parsers()["run"])) | {"--"}, "the demo uses a flag `run` does not have"


def test_the_architecture_table_names_every_module():
    """docs/contributing.md is where a newcomer finds the folder for a stage: every module must be in its
    package's row, so a new module needs its line there in the same change."""
    text = (DOCS / "contributing.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip(): line
        for line in text.split("| package | role | modules |", 1)[1].split("\n\n", 1)[0].splitlines()
        if line.startswith("| ") and "`" in line
    }
    src = ROOT / "src" / "db_test_action"
    for package in sorted(p for p in src.iterdir() if (p / "__init__.py").is_file()):
        row = next((r for label, r in rows.items() if f"`{package.name}" in label), "")
        assert row, f"docs/contributing.md has no row for {package.name}/"
        for module in sorted(package.glob("*.py")):
            if module.name != "__init__.py":
                assert f"`{module.name}`" in row or f"`{package.name}/{module.name}`" in row, (
                    f"docs/contributing.md: {package.name}/{module.name} is not in its package's row"
                )
