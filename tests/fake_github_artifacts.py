"""The nightly's fake GitHub (fake_github_tracking.py) with workflow artifacts: the repository's
default branch, the artifact list (filtered by name, newest first, as GitHub answers) and each
artifact's zip behind a 302 redirect to a blob URL, as GitHub serves `archive_download_url`."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

from fake_github import _json
from fake_github_tracking import FakeGitHubTracking
from werkzeug import Request, Response

REPO_ID = 4242


@dataclass
class FakeGitHubArtifacts(FakeGitHubTracking):
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    zips: dict[int, bytes] = field(default_factory=dict)
    default_branch: str = "main"

    def add_artifact(
        self, name: str, files: dict[str, str], *, branch: str = "main", run_id: int = 1,
        from_fork: bool = False, expired: bool = False, created_at: str = "2026-12-01T03:30:00Z",
    ) -> dict[str, Any]:  # fmt: skip
        self.next_id += 1
        artifact_id = self.next_id
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path, text in files.items():
                archive.writestr(path, text)
        self.zips[artifact_id] = buffer.getvalue()
        artifact = {
            "id": artifact_id,
            "name": name,
            "expired": expired,
            "created_at": created_at,
            "archive_download_url": f"{self.base_url}/repos/o/r/actions/artifacts/{artifact_id}/zip",
            "workflow_run": {
                "id": run_id,
                "repository_id": REPO_ID,
                "head_repository_id": REPO_ID + 1 if from_fork else REPO_ID,
                "head_branch": branch,
            },
        }
        self.artifacts.insert(0, artifact)
        return artifact

    def _route(self, request: Request) -> Response:
        path = request.path[len(self.prefix) :] if request.path.startswith(self.prefix + "/") else ""
        if request.method == "GET" and path == "/repos/o/r":
            return _json({"id": REPO_ID, "full_name": "o/r", "default_branch": self.default_branch})
        if request.method == "GET" and path == "/repos/o/r/actions/artifacts":
            name = request.args.get("name")
            found = [a for a in self.artifacts if not name or a["name"] == name]
            return _json({"total_count": len(found), "artifacts": found})
        if request.method == "GET" and (m := re.fullmatch(r"/repos/o/r/actions/artifacts/(\d+)/zip", path)):
            return Response(status=302, headers={"Location": f"{self.base_url}/blobs/{m[1]}.zip"})
        if request.method == "GET" and (m := re.fullmatch(r"/blobs/(\d+)\.zip", path)):
            data = self.zips.get(int(m[1]))
            if data is not None:
                return Response(data, status=200, content_type="application/zip")
        return super()._route(request)
