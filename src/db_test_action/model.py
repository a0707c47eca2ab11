"""Shared vocabulary of the pipeline stages: closed sets as Enums, values as frozen dataclasses.

Every stage imports from here (and from earlier stages only), so a renderer, the JSON writer and the
publisher agree on one meaning of "error", "flaky" or "setup". Collections are tuples: a frozen
dataclass holding a list is not frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(str, Enum):
    """What one execution of one test phase ended as (a single <testcase> element)."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"


class Phase(str, Enum):
    SETUP = "setup"
    CALL = "call"
    TEARDOWN = "teardown"


class Level(str, Enum):
    """Severity for annotations (GitHub's notice/warning/error)."""

    NOTICE = "notice"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ParseProblem:
    """A result file we could not read completely; shown in the report, never dropped."""

    file: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Annotation:
    """One `::error file=…,line=…,title=…::message` line; `rank` orders them (lower = more important)."""

    level: Level
    title: str
    message: str
    file: str | None = None
    line: int | None = None
    rank: int = 100


# --- one <testcase> element, as read ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One <testcase> element. Several occurrences make one test (reruns, repeats, teardown after failure).

    `phase` is None for a clean pass; `message` is the result's message with pytest's
    `failed on setup with "…"` wrapper removed (the phase records it).
    """

    test_id: str
    file: str | None
    line: int | None
    outcome: Outcome
    phase: Phase | None
    duration_s: float
    message: str
    text: str
    source: str
    shard: int | None = None
    run: int | None = None
    attempt: int | None = None
    worker: str | None = None
    markers: tuple[str, ...] = ()
    # The plugin's window of this attempt (epoch seconds) and its database: ties server log lines to it.
    started_at: float | None = None
    finished_at: float | None = None
    database: str | None = None
    # "setup: <exception line>": what failed in a rerun attempt that pytest wrote as an empty testcase.
    attempt_failure: str | None = None
    # The plugin's `--quarantine` list held this test: a failure in any phase was written as an xfail
    # (`quarantined (setup): …`), which the reader turns back into this phase and message.
    is_quarantined: bool = False
    # `db-test-action doctor`: the plugin's JSON list of this attempt's fixture spans
    # ([name, scope, "file:line", phase, start, end]), so a logged statement names the fixture that ran it.
    fixtures: str | None = None


@dataclass(frozen=True, slots=True)
class ResultFile:
    """One JUnit file that was read: its shard/run (from properties or the `shard-2-run-1.xml` name) and
    its wall time (the top-level <testsuite time=…>, or the sum of its testcases when absent)."""

    path: str
    shard: int | None
    run: int | None
    wall_s: float
    testcases: int
    is_pytest: bool = False


# --- per test, after grouping -------------------------------------------------------------------


class Status(str, Enum):
    """The one column a test lands in. Precedence: setup error > failed > teardown error."""

    PASSED = "passed"
    FAILED = "failed"
    SETUP_ERROR = "setup-error"
    TEARDOWN_ERROR = "teardown-error"
    FLAKY = "flaky"
    SKIPPED = "skipped"
    XFAILED = "xfailed"

    @property
    def is_problem(self) -> bool:
        return self in (Status.FAILED, Status.SETUP_ERROR, Status.TEARDOWN_ERROR, Status.FLAKY)


@dataclass(frozen=True, slots=True)
class Cause:
    """A root-cause class: stable `key` (e.g. "concurrent-ddl"), human title, a fix hint, an optional detail
    (the constraint name, the SQLSTATE) taken from the message."""

    key: str
    title: str
    hint: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class CauseRule:
    """Regex → cause. A named group `detail` in the pattern (e.g. a constraint name) becomes Cause.detail."""

    key: str
    title: str
    hint: str
    pattern: str


@dataclass(frozen=True, slots=True)
class CategoryRule:
    """A category from `[tool.db-test-action.categories]`: fnmatch globs over node id or file,
    or `marker:NAME` for tests that carry that marker (the `markers` JUnit property)."""

    name: str
    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One failing phase of one attempt of a test, with its classified cause."""

    phase: Phase
    outcome: Outcome
    message: str
    text: str
    cause: Cause
    source: str
    shard: int | None = None
    run: int | None = None
    attempt: int | None = None
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """One PostgreSQL log record, as psql would print it (`lines`), trimmed for a comment.

    The server knows what the driver's one-line exception does not: the statement, DETAIL (the dependent
    table of a failed DROP, both processes of a deadlock, the lock holder), HINT and CONTEXT.
    """

    timestamp: float  # epoch seconds, UTC
    severity: str  # ERROR, FATAL, PANIC, or LOG for a lock wait
    message: str
    lines: tuple[str, ...]
    sqlstate: str | None = None
    database: str | None = None
    pid: int | None = None
    source: str = ""  # the server log file


@dataclass(frozen=True, slots=True)
class ServerLogSummary:
    """What the server logs held for this report; `files` empty means no evidence (and `note` says why).

    `unattributed` counts server errors in no test's time window (session fixtures, teardown after the
    last test, a neighbour's setup): nobody's failure shows them, so the report counts them on their own.
    Errors inside a test's window that cannot be tied to one failing test (a passing test that expected
    them, or two workers whose messages both match) are `ambiguous`: neither shown nor guessed.
    """

    files: tuple[str, ...] = ()
    note: str = ""
    records: int = 0  # records read from the files
    errors: int = 0  # ERROR/FATAL/PANIC records of client backends
    attributed: int = 0  # records shown with a failing test
    ambiguous: int = 0
    unattributed: int = 0
    examples: tuple[ServerRecord, ...] = ()  # a few of the unattributed errors
    # Databases clients of the suite connected to that the run did not create (the log's connection
    # lines): a suite that ignores DATABASE_URL, so repeats and shards share its state.
    foreign_databases: tuple[str, ...] = ()
    problems: tuple[ParseProblem, ...] = ()  # damaged log records: evidence is partial, results are not

    @property
    def is_available(self) -> bool:
        return bool(self.files)


@dataclass(frozen=True, slots=True)
class Collision:
    """This test (on `worker`) and the other test the server log shows touching the same `object`
    (`partner_id` None: "partner unknown"); `evidence` says how the partner was found."""

    test_id: str
    worker: str | None
    partner_id: str | None
    partner_worker: str | None
    object: str | None
    cause: str
    evidence: str = ""
    count: int = 1  # error records of this test that show the same pair (repeats, reruns)


@dataclass(frozen=True, slots=True)
class TestResult:
    """Everything known about one test id across files, shards, runs and attempts."""

    __test__ = False  # not a pytest class, despite the name

    test_id: str
    category: str
    file: str | None
    line: int | None
    status: Status
    executions: int
    failed_executions: int
    duration_s: float
    problems: tuple[Problem, ...] = ()
    server_log: tuple[ServerRecord, ...] = ()  # server records tied to this test's failing attempts
    # On the `--quarantine` list: its failures are xfailed (not counted as failures) and kept in `problems`
    # with outcome XFAILED, so the report can show what failed without it blocking.
    is_quarantined: bool = False
    collisions: tuple[Collision, ...] = ()  # shared-state failures: the other test, from server evidence


@dataclass(frozen=True, slots=True)
class Hang:
    """A test caught at a time limit (`reason`: suite-timeout or test-timeout) and what it waited on.

    `test_id`/`worker` come from the waiting session's `application_name` (or the test the runner named);
    `waiting_on` describes the ungranted lock (empty: the test was not waiting on the server), `holder_*`
    the session that holds it (or, for a test not waiting, its own session idle in transaction) and the
    test that opened that session; `holder_since_phase`/`_fixture` say what that test was doing when the
    transaction began (fixture `seed`, its body). Times are epoch seconds.
    """

    reason: str
    limit_s: float
    shard: int | None
    run: int | None
    test_id: str | None
    worker: str | None
    statement: str = ""
    waiting_on: str = ""
    waited_s: float | None = None
    running_s: float | None = None
    holder_test: str | None = None
    holder_worker: str | None = None
    holder_pid: int | None = None
    holder_state: str = ""
    holder_since: float | None = None
    holder_since_phase: str = ""  # what the holder's test was doing then: setup, fixture, body
    holder_since_fixture: str = ""
    holder_statement: str = ""
    holding: tuple[str, ...] = ()  # tables the holder's session has locked
    note: str = ""


# --- report ---------------------------------------------------------------------------------------


class Verdict(str, Enum):
    """The worst thing the results show, independent of which gates are on (see Report.is_green)."""

    PASSED = "passed"
    FLAKY = "flaky"
    OVER_BUDGET = "over-budget"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    NO_TESTS = "no-tests"


class BudgetStatus(str, Enum):
    OK = "ok"
    WARNING = "warning"
    OVER = "over"


@dataclass(frozen=True, slots=True)
class Counts:
    """Per category (or `all`), as pytest counts: status columns hold each test once; `setup_errors` and
    `teardown_errors` every test with such an error in any attempt (also when it failed in its body or was
    flaky: "1 failed, 1 error"); `*_flaky` say how many of those belong to flaky tests."""

    name: str
    tests: int = 0
    passed: int = 0
    failed: int = 0
    setup_errors: int = 0
    teardown_errors: int = 0
    flaky: int = 0
    skipped: int = 0
    xfailed: int = 0
    # Across the columns above (a quarantined failure is xfailed): tests on the `--quarantine` list, those
    # whose failure it turned into an xfail this run, and those that passed (maybe ready to leave it).
    quarantined: int = 0
    quarantined_failed: int = 0
    quarantined_passed: int = 0
    duration_s: float = 0.0
    budget_s: float | None = None
    budget_status: BudgetStatus | None = None
    setup_errors_flaky: int = 0
    teardown_errors_flaky: int = 0

    @property
    def hard_fixture_errors(self) -> int:
        """Setup/teardown errors of tests that did not pass on another attempt: what the errors gate sees."""
        return self.setup_errors - self.setup_errors_flaky + self.teardown_errors - self.teardown_errors_flaky


@dataclass(frozen=True, slots=True)
class CauseGroup:
    """One root cause and every test it hit; Markdown shows one row, not one story per test."""

    cause: Cause
    tests: int
    occurrences: int
    categories: tuple[str, ...]
    example_test: str
    example_message: str
    test_ids: tuple[str, ...]
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall time of the slowest shard/run file, and the sum over all files (≈ machine time)."""

    wall_s: float = 0.0
    wall_source: str = ""
    total_s: float = 0.0
    average_test_s: float = 0.0
    slowest_test: str = ""
    slowest_test_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """One budget: `key` is the pyproject key it came from, so a user can find and change it."""

    name: str
    key: str
    actual_s: float
    limit_s: float
    status: BudgetStatus
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Regression:
    """A measure that got slower than the base report by more than the configured ratio and seconds."""

    name: str
    base_s: float
    actual_s: float


@dataclass(frozen=True, slots=True)
class SlowTest:
    test_id: str
    category: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class DoctorFinding:
    """A fixture anti-pattern seen in a serial run that fails under xdist (report/doctor.py: the keys)."""

    key: str
    title: str
    fix: str
    evidence: tuple[str, ...]
    test_count: int
    tests: tuple[str, ...]
    fixture: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """The one model every output (Markdown, JSON, console, annotations) renders from."""

    title: str
    verdict: Verdict
    totals: Counts
    categories: tuple[Counts, ...]
    causes: tuple[CauseGroup, ...]
    tests: tuple[TestResult, ...]  # only tests with problems (failed, errors, flaky): the rest are counts
    timing: Timing
    budgets: tuple[BudgetCheck, ...]
    regressions: tuple[Regression, ...]
    problems: tuple[ParseProblem, ...]
    files: tuple[str, ...]
    fail_on: tuple[str, ...]
    gate_failures: tuple[str, ...]
    slowest: tuple[SlowTest, ...] = ()
    details_per_cause: int = 5
    server: ServerLogSummary | None = None  # None: not a run of ours, nothing to say about the server
    # Every test on the `--quarantine` list: failed ones first (with their problems), then the rest.
    quarantined: tuple[TestResult, ...] = ()
    # The runner's manifest planned no tests here (a shard beyond the test count): zero tests is expected.
    is_empty_planned: bool = False
    # Against --base (the default branch's report): failing tests that did not fail there, and budgets
    # over now that were not over there; the `regressions` gate fails on these only. Without a base every
    # failure and breach is new (`has_base` false).
    new_failures: tuple[str, ...] = ()
    new_breaches: tuple[str, ...] = ()
    has_base: bool = False
    hangs: tuple[Hang, ...] = ()  # tests caught at a time limit (runner snapshots of the server)
    # The fixture doctor (a run with fixture spans and a statement log): None when it did not look.
    doctor: tuple[DoctorFinding, ...] | None = None

    @property
    def is_green(self) -> bool:
        """True when no gate selected by --fail-on tripped: the exit code is 0."""
        return not self.gate_failures
