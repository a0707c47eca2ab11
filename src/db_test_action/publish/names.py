"""Names and defaults of the GitHub side, apart from the modules that import PyGithub.

PyGithub (with requests, urllib3 and cryptography) takes about a second to import; `stability` shows
these defaults in its --help and needs the GitHub modules only when a branch or the tracking issue is
used (benchmarks/stability_scale.py).
"""

from __future__ import annotations

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_LABEL = "db-test-action:stability"
DEFAULT_BRANCH = "db-test-action-history"
DEFAULT_HISTORY_PATH = "stability-history.jsonl"
