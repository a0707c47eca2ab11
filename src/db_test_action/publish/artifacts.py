"""The previous night's stability history from a workflow artifact, through our own GitHub client.

Why not the `gh` CLI: it is missing on self-hosted runners, and the shell step that called it turned
every failure (no gh, no `actions: read`, an outage) into "no earlier history", so a nightly quietly
started over and its consecutive-green gate never saw the nights before. Here a failure to *ask* is an
error; only a successful answer with no artifact is a first night.

Only artifacts uploaded by runs of the repository's default branch from the repository itself count:
a pull request (from a fork, say) can upload an artifact of the same name, and must not be able to feed
the quarantine list or the tracking issue.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import requests

from db_test_action.publish.client import PublishError, Retrier

MAX_HISTORY_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class HistoryArtifact:
    artifact_id: int
    run_id: int
    text: str


def _get(gh: Any, retrier: Retrier, what: str, url: str, params: dict[str, Any] | None = None) -> Any:
    return retrier.call(what, lambda: gh.requester.requestJsonAndCheck("GET", url, parameters=params)[1])


def newest_history_artifact(gh: Any, retrier: Retrier, repository: str, name: str) -> dict[str, Any] | None:
    """The newest unexpired artifact `name` from a default-branch run of the repository itself."""
    repo = _get(gh, retrier, f"read repository {repository}", f"/repos/{repository}")
    branch, repo_id = repo.get("default_branch"), repo.get("id")
    listing = _get(
        gh, retrier, f"list artifacts named {name}", f"/repos/{repository}/actions/artifacts",
        {"name": name, "per_page": 100},
    )  # fmt: skip
    candidates = []
    for artifact in listing.get("artifacts") or ():
        run = artifact.get("workflow_run") or {}
        if artifact.get("name") != name or artifact.get("expired"):
            continue
        if run.get("head_branch") != branch:
            continue
        if repo_id is not None and run.get("head_repository_id") not in (None, repo_id):
            continue
        candidates.append(artifact)
    candidates.sort(key=lambda a: (str(a.get("created_at") or ""), int(a.get("id") or 0)), reverse=True)
    return candidates[0] if candidates else None


def download_history(
    retrier: Retrier, artifact: dict[str, Any], token: str, file_name: str, timeout_s: int = 60
) -> str:
    """The history file out of the artifact's zip (GitHub answers with a redirect to the blob)."""
    url = str(artifact.get("archive_download_url") or "")
    if not url:
        raise PublishError(f"artifact {artifact.get('id')}: no archive_download_url in GitHub's answer")

    def fetch() -> bytes:
        response = requests.get(
            url, headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
            timeout=timeout_s, allow_redirects=True,
        )  # fmt: skip
        response.raise_for_status()
        return response.content

    data = retrier.call(f"download artifact {artifact.get('id')}", fetch)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == file_name]
            if not names:
                raise PublishError(
                    f"artifact {artifact.get('id')}: holds no {file_name} ({', '.join(archive.namelist()[:5])})"
                )
            info = archive.getinfo(names[0])
            if info.file_size > MAX_HISTORY_BYTES:
                raise PublishError(f"artifact {artifact.get('id')}: {file_name} is over 64 MB")
            return archive.read(info).decode("utf-8", errors="replace")
    except zipfile.BadZipFile as exc:
        raise PublishError(f"artifact {artifact.get('id')}: not a zip file ({exc})") from None


def fetch_history(
    gh: Any, retrier: Retrier, repository: str, name: str, token: str, file_name: str
) -> HistoryArtifact | None:
    """None: GitHub answered and there is no such artifact (the first night). Raises PublishError otherwise."""
    artifact = newest_history_artifact(gh, retrier, repository, name)
    if artifact is None:
        return None
    text = download_history(retrier, artifact, token, file_name)
    run_id = int((artifact.get("workflow_run") or {}).get("id") or 0)
    return HistoryArtifact(int(artifact.get("id") or 0), run_id, text)
