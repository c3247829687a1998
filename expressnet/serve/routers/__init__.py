"""The service's routers: faces (images), videos, stream (WebSocket), system (models, health, metrics), page,
docs (the offline API reference)."""
