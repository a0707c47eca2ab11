"""Settings: one table of every setting and one resolver (settings.py), value parsers (values.py), and the
report's nested configuration (report.py). Pure: callers pass the flags, the environment and the TOML table."""

from db_test_action.config.report import Budgets, ReportConfig, resolve_report_config
from db_test_action.config.settings import SETTINGS, TABLE, Setting, resolve, resolve_plugin, setting_for
from db_test_action.config.values import parse_bool, parse_duration, parse_fail_on

__all__ = [
    "SETTINGS",
    "TABLE",
    "Budgets",
    "ReportConfig",
    "Setting",
    "parse_bool",
    "parse_duration",
    "parse_fail_on",
    "resolve",
    "resolve_plugin",
    "resolve_report_config",
    "setting_for",
]
