"""One ASGI middleware around every request: a request id (``X-Request-ID``, taken when well-formed, else
generated) on the response, in ``scope["state"]`` and in each log line; the in-flight gauge, request counter
and latency histogram by route template; and a catch-all that answers an unexpected exception with a 500 JSON
naming the request id (the traceback goes to the log, never to the client)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body
from .metrics import Metrics

log = logging.getLogger("expressnet.serve")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's, "-" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if path else "<unmatched>"


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or []
        headers = dict(raw_headers)
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        method = scope.get("method", "WS")
        status = {"code": 500, "started": False}
        start = time.perf_counter()
        self.metrics.in_flight.inc()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif message["type"] == "websocket.accept":
                status["code"], status["started"] = 101, True
            elif message["type"] == "websocket.close" and not status["started"]:
                status["code"], status["started"] = 403, True  # refused at the handshake
            elif message["type"] == "websocket.http.response.start":
                status["code"], status["started"] = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if len(raw_headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in raw_headers) > MAX_HEADER_BYTES:
                await self.plain_error(
                    send,
                    431,
                    f"request headers are too large (at most {MAX_HEADERS} headers, {MAX_HEADER_BYTES:,} bytes)",
                    request_id,
                    scope,
                )
                status["code"] = 431
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", method, scope.get("path"))
            if scope["type"] == "http" and not status["started"]:
                status["code"] = 500
                await self.plain_error(send, 500, "internal server error", request_id, scope)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            log.info("%s %s %s %.1f ms", method, scope.get("path"), status["code"], elapsed * 1000)
            request_id_var.reset(token)

    @staticmethod
    async def plain_error(send: Send, code: int, message: str, request_id: str, scope: Scope) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1011})
            return
        body = json.dumps(error_body(message, request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
