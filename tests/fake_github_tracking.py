"""The publisher's stateful fake GitHub (tests/fake_github.py), extended with what the nightly job uses:
issues (list by label and state, create, edit, close), the contents API on branches, git blobs, and the
git data calls that create an orphan branch. Same rules: real HTTP, token checked, faults injectable,
writes refused with 403 for read-only tokens, and only the author may edit an issue (as GitHub does for
integration tokens without triage rights).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from fake_github import READ_ONLY, FakeGitHub, _json
from werkzeug import Request, Response


def _sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeGitHubTracking(FakeGitHub):
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    branches: dict[str, dict[str, bytes]] = field(default_factory=dict)  # branch → path → content
    blobs: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)  # commit sha → tree sha
    big_file_bytes: int = 1_000_000  # GitHub omits `content` for files over 1 MB
    next_number: int = 1

    def add_issue(
        self, author: str, title: str, body: str, labels=("db-test-action:stability",), state="open"
    ):
        number = self.next_number
        self.next_number += 1
        self.issues[number] = {
            "number": number,
            "title": title,
            "body": body,
            "state": state,
            "state_reason": None,
            "labels": [{"name": name} for name in labels],
            "user": {"login": author, "type": "Bot" if author.endswith("[bot]") else "User"},
            "url": f"{self.base_url}/repos/o/r/issues/{number}",
            "html_url": f"https://github.example/o/r/issues/{number}",
        }
        return self.issues[number]

    def open_issues(self) -> list[dict[str, Any]]:
        return [i for i in self.issues.values() if i["state"] == "open"]

    def file(self, branch: str, path: str) -> str | None:
        data = self.branches.get(branch, {}).get(path)
        return None if data is None else data.decode("utf-8")

    def _route(self, request: Request) -> Response:
        path = request.path[len(self.prefix) :] if request.path.startswith(self.prefix + "/") else ""
        method = request.method
        if path == "/repos/o/r/issues":
            if method == "GET":
                state = request.args.get("state", "open")
                labels = {x for x in request.args.get("labels", "").split(",") if x}
                found = [
                    i
                    for i in sorted(self.issues.values(), key=lambda i: -i["number"])
                    if (state == "all" or i["state"] == state)
                    and labels <= {lb["name"] for lb in i["labels"]}
                ]
                return self._page(request, found)
            if method == "POST":
                if self.is_read_only:
                    return _json({"message": READ_ONLY}, 403)
                data = request.get_json()
                return _json(
                    self.add_issue(self.viewer, data["title"], data.get("body", ""), data.get("labels", [])),
                    201,
                )
        if (m := re.fullmatch(r"/repos/o/r/issues/(\d+)", path)) and method in ("GET", "PATCH"):
            issue = self.issues.get(int(m[1]))
            if issue is None:
                return _json({"message": "Not Found"}, 404)
            if method == "GET":
                return _json(issue)
            if self.is_read_only or issue["user"]["login"] != self.viewer:
                return _json({"message": READ_ONLY}, 403)
            for key, value in request.get_json().items():
                issue[key] = value
            return _json(issue)
        if m := re.fullmatch(r"/repos/o/r/contents/(.+)", path):
            return self._contents(request, m[1])
        if (m := re.fullmatch(r"/repos/o/r/git/blobs/([0-9a-f]+)", path)) and method == "GET":
            data = self.blobs[m[1]]
            return _json(
                {
                    "sha": m[1],
                    "size": len(data),
                    "encoding": "base64",
                    "content": base64.b64encode(data).decode(),
                }
            )
        if path == "/repos/o/r/git/trees" and method == "POST":
            files = {e["path"]: e["content"].encode() for e in request.get_json()["tree"]}
            sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
            self.trees[sha] = files
            return _json({"sha": sha, "url": f"{self.base_url}/repos/o/r/git/trees/{sha}", "tree": []}, 201)
        if path == "/repos/o/r/git/commits" and method == "POST":
            data = request.get_json()
            sha = hashlib.sha1(f"{data['tree']}{data['parents']}{data['message']}".encode()).hexdigest()
            self.commits[sha] = data["tree"]
            return _json(
                {
                    "sha": sha,
                    "url": f"{self.base_url}/repos/o/r/git/commits/{sha}",
                    "tree": {"sha": data["tree"]},
                },
                201,
            )
        if path == "/repos/o/r/git/refs" and method == "POST":
            data = request.get_json()
            branch = data["ref"].removeprefix("refs/heads/")
            if branch in self.branches:
                return _json({"message": "Reference already exists"}, 422)
            self.branches[branch] = dict(self.trees[self.commits[data["sha"]]])
            for content in self.branches[branch].values():
                self.blobs[_sha(content)] = content
            return _json({"ref": data["ref"], "object": {"sha": data["sha"], "type": "commit"}}, 201)
        return super()._route(request)

    def _contents(self, request: Request, file_path: str) -> Response:
        if request.method == "GET":
            branch = request.args.get("ref", "main")
            data = self.branches.get(branch, {}).get(file_path)
            if data is None:
                return _json({"message": "Not Found"}, 404)
            is_big = len(data) > self.big_file_bytes
            return _json(
                {
                    "type": "file", "name": file_path.rsplit("/", 1)[-1], "path": file_path, "sha": _sha(data),
                    "size": len(data), "encoding": "none" if is_big else "base64",
                    "content": "" if is_big else base64.b64encode(data).decode(),
                }
            )  # fmt: skip
        if request.method != "PUT":
            return _json({"message": "Not Found"}, 404)
        if self.is_read_only:
            return _json({"message": READ_ONLY}, 403)
        body = request.get_json()
        branch = body.get("branch", "main")
        if branch not in self.branches:
            return _json({"message": f"Branch {branch} not found"}, 404)
        current = self.branches[branch].get(file_path)
        if current is not None and "sha" not in body:
            return _json({"message": 'Invalid request.\n\n"sha" wasn\'t supplied.'}, 422)
        if current is not None and body["sha"] != _sha(current):
            return _json({"message": f"{file_path} does not match {body['sha']}"}, 409)
        data = base64.b64decode(body["content"])
        self.branches[branch][file_path] = data
        self.blobs[_sha(data)] = data
        commit = hashlib.sha1(data + body["message"].encode()).hexdigest()
        return _json(
            {
                "content": {"path": file_path, "sha": _sha(data)},
                "commit": {"sha": commit, "message": body["message"]},
            },
            201 if current is None else 200,
        )
