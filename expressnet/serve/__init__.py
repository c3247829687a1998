"""``expressnet serve``: an HTTP API (images, videos, a WebSocket stream), a browser page, limits and metrics.

from expressnet.serve import Settings, create_app
app = create_app(Settings(model="ferplus", workers=2))   # an ASGI app: uvicorn, TestClient, ...
"""

from .app import create_app, run, serve_in_thread
from .settings import Settings

__all__ = ["Settings", "create_app", "run", "serve_in_thread"]
