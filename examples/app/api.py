"""HTTP-shaped endpoints without a web framework: a request in, a status and JSON body out.

Enough surface for "endpoint" tests (status codes, the CSRF header on state-changing requests) while
keeping the example free of an ASGI server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from app import services

ENCRYPTION_KEY = "example-key-not-secret"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    status: int
    json: dict = field(default_factory=dict)


async def handle(conn: AsyncConnection, request: Request) -> Response:
    """Route one request; a database error propagates (it is not the client's fault)."""
    try:
        if (request.method, request.path) == ("POST", "/login"):
            body = request.json
            session = await services.login(
                conn, uuid.UUID(body["workspace"]), body["email"], body["password"]
            )
            return Response(200, {"token": session.token, "csrf": session.csrf_token})
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if request.method == "GET" and request.path == "/me":
            session = await services.authenticate(conn, token)
            return Response(200, {"user": str(session.user_id), "workspace": str(session.workspace_id)})
        if request.method == "GET" and request.path == "/notes":
            session = await services.authenticate(conn, token)
            return Response(200, {"titles": await services.list_notes(conn, session)})
        if request.method == "GET" and request.path.startswith("/notes/"):
            session = await services.authenticate(conn, token)
            title, body = await services.read_note(conn, session, uuid.UUID(request.path[7:]), ENCRYPTION_KEY)
            return Response(200, {"title": title, "body": body})
        if request.method == "GET":
            return Response(404, {"error": "no such endpoint"})
        # Every state-changing request needs the session's CSRF token in a header.
        session = await services.check_csrf(conn, token, request.headers.get("x-csrf-token"))
        if (request.method, request.path) == ("POST", "/notes"):
            note = await services.add_note(
                conn, session, request.json["title"], request.json["body"], ENCRYPTION_KEY
            )
            return Response(201, {"id": str(note)})
        if (request.method, request.path) == ("POST", "/logout"):
            await services.logout(conn, token)
            return Response(204)
        return Response(404, {"error": "no such endpoint"})
    except services.AuthError as exc:
        return Response(401 if "CSRF" not in str(exc) else 403, {"error": str(exc)})
    except services.NotFound:
        return Response(404, {"error": "not found"})
    except (KeyError, ValueError) as exc:
        return Response(400, {"error": f"bad request: {exc}"})
