"""The server's ASGI middleware: the request body limit and the API key. Both wrap the whole app, so
they apply to every route, the 404s included."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from .errors import error_response


class _TooLarge(Exception):
    pass


class BodyLimit:
    """413 for a request body over ``limit`` bytes, whether it says its length or streams it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, receive, send)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(message.get("more_body", False))
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge as e:
            if not started:
                await self._refuse(scope, receive, send, more_body=e.args[0])

    async def _refuse(self, scope, receive, send, more_body: bool = True):
        # read the rest of the upload and drop it, so that a client that sends its whole body before
        # it reads the reply gets the 413 rather than a broken connection
        while more_body:
            message = await receive()
            more_body = message["type"] == "http.request" and message.get("more_body", False)
        response = error_response(413, f"the request body exceeds the server's limit of {self.limit} bytes",
                                  code="request_too_large")
        await response(scope, receive, send)


def _is_page(scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "GET" and (
        scope["path"] in ("/", "/favicon.ico") or scope["path"].startswith("/ui/"))


class BearerAuth:
    """With an API key, every route needs ``Authorization: Bearer <key>`` (401 otherwise); the
    WebSocket may give it as ``?api_key=<key>`` instead (a browser cannot set headers on one). The
    page's own files (``/``, ``/ui/*``: code, no data) are open, so a browser can load them; the page
    then sends the key it was given in its address with every call."""

    def __init__(self, app, api_key: str | None):
        self.app, self.key = app, api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] not in ("http", "websocket") or _is_page(scope):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers", [])).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scope["type"] == "websocket" and not header:
            scheme, token = b"bearer", parse_qs(scope.get("query_string", b"")).get(b"api_key", [b""])[0]
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
            return
        response = error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                  code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
