"""Settings: one table of every setting and one resolver (settings.py), value parsers (values.py), and the
report's nested configuration (report.py). Pure: callers pass the flags, the environment and the TOML table.

Nothing is re-exported here: the pytest plugin imports `config.settings` at every pytest start, and this
package's import must not pull in the report's model with it.
"""
