"""A small stateful GitHub REST/GraphQL fake served by pytest-httpserver over real HTTP.

PyGithub talks to it exactly as to api.github.com or a GHES `/api/v3` (never patched). It keeps comments
and pull requests in memory, pages comment lists with real `Link` headers, checks the token, enforces
authorship on PATCH (as GitHub does), and can inject faults (502, rate limits, read-only 403s).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

READ_ONLY = "Resource not accessible by integration"


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    is_applied: bool = False  # do the real work first, then answer with the fault (a "lost" response)


@dataclass
class FakeGitHub:
    server: HTTPServer
    prefix: str = ""  # "" like api.github.com, "/api/v3" like GHES
    token: str = "s3cr3t-token"
    viewer: str = "github-actions[bot]"
    is_viewer_known: bool = True  # False: GraphQL viewer and GET /user both 403, like some app tokens
    is_read_only: bool = False  # writes get 403 "Resource not accessible by integration" (fork PRs)
    page_size: int = 30
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query) as received
    next_id: int = 1000

    def __post_init__(self) -> None:
        self.server.expect_request(re.compile(".*")).respond_with_handler(self)

    @property
    def base_url(self) -> str:
        return self.server.url_for(self.prefix or "/").rstrip("/")

    @property
    def graphql_path(self) -> str:
        return (self.prefix.removesuffix("/v3") if self.prefix else "") + "/graphql"

    def add_comment(self, number: int, author: str, body: str) -> dict[str, Any]:
        self.next_id += 1
        comment = {
            "id": self.next_id,
            "body": body,
            "user": {"login": author, "type": "Bot" if author.endswith("[bot]") else "User"},
            "url": f"{self.base_url}/repos/o/r/issues/comments/{self.next_id}",
            "html_url": f"https://github.example/o/r/pull/{number}#issuecomment-{self.next_id}",
        }
        self.comments.setdefault(number, []).append(comment)
        return comment

    def add_pull(self, number: int, head_owner: str, branch: str, sha: str, state: str = "open") -> None:
        head_repo = {"full_name": f"{head_owner}/r", "owner": {"login": head_owner}}
        self.pulls.append(
            {
                "number": number,
                "state": state,
                "head": {"ref": branch, "sha": sha, "label": f"{head_owner}:{branch}", "repo": head_repo},
                "url": f"{self.base_url}/repos/o/r/pulls/{number}",
            }
        )

    def fail(self, method: str, path: str, status: int, message: str, **kwargs: Any) -> None:
        self.faults.append(Fault(method, re.compile(path), status, message, **kwargs))

    def calls(self, method: str | None = None) -> list[str]:
        return [p for m, p in self.log if method is None or m == method]

    # --- HTTP -------------------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        query = request.query_string.decode()
        self.log.append((request.method, request.path + (f"?{query}" if query else "")))
        if request.headers.get("Authorization") not in (f"token {self.token}", f"Bearer {self.token}"):
            return _json({"message": "Bad credentials"}, 401)
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and fault.path.search(request.path):
                fault.times -= 1
                if fault.is_applied:
                    self._route(request)
                return _json({"message": fault.message}, fault.status, fault.headers)
        return self._route(request)

    def _route(self, request: Request) -> Response:
        method, path = request.method, request.path
        if method == "POST" and path == self.graphql_path:
            if not self.is_viewer_known:
                return _json({"message": READ_ONLY}, 403)
            return _json({"data": {"viewer": {"login": self.viewer}}})
        if not path.startswith(self.prefix + "/"):
            return _json({"message": "Not Found"}, 404)
        path = path[len(self.prefix) :]
        if method == "GET" and path == "/user":
            return (
                _json({"login": self.viewer}) if self.is_viewer_known else _json({"message": READ_ONLY}, 403)
            )
        if m := re.fullmatch(r"/repos/o/r/issues/(\d+)/comments", path):
            number = int(m[1])
            if method == "GET":
                return self._page(request, self.comments.get(number, []))
            if self.is_read_only:
                return _json({"message": READ_ONLY}, 403)
            return _json(self.add_comment(number, self.viewer, request.get_json()["body"]), 201)
        if (m := re.fullmatch(r"/repos/o/r/issues/comments/(\d+)", path)) and method == "PATCH":
            for comment in (c for cs in self.comments.values() for c in cs):
                if comment["id"] == int(m[1]):
                    if self.is_read_only or comment["user"]["login"] != self.viewer:
                        return _json({"message": READ_ONLY}, 403)
                    comment["body"] = request.get_json()["body"]
                    return _json(comment)
            return _json({"message": "Not Found"}, 404)
        if method == "GET" and path == "/repos/o/r/pulls":
            head = request.args.get("head")
            state = request.args.get("state", "open")
            found = [
                p for p in self.pulls if (not head or p["head"]["label"] == head) and p["state"] == state
            ]
            return self._page(request, found)
        if method == "GET" and (m := re.fullmatch(r"/repos/o/r/commits/([0-9a-f]+)/pulls", path)):
            return self._page(request, [p for p in self.pulls if p["head"]["sha"] == m[1]])
        return _json({"message": "Not Found"}, 404)

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        page = int(request.args.get("page", "1"))
        start = (page - 1) * self.page_size
        headers = {}
        if start + self.page_size < len(items):
            args = {**request.args.to_dict(), "page": str(page + 1)}
            headers["Link"] = f'<{self.server.url_for(request.path)}?{urlencode(args)}>; rel="next"'
        return _json(items[start : start + self.page_size], 200, headers)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, headers=headers or {}, content_type="application/json")
