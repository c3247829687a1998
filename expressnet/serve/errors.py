"""``ApiError``: an error the client caused or can act on, answered as JSON ``{"detail", "request_id"}``."""

from __future__ import annotations


class ApiError(Exception):
    """``status`` (4xx/503), a ``message`` naming the problem, optional response ``headers``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_body(message: str | list, request_id: str | None) -> dict:
    return {"detail": message, "request_id": request_id}
