"""Prometheus metrics, one registry per app (so several apps in one process, as in tests, do not clash)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no *_created series beside each counter and histogram
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "expressnet_http_requests",
            "HTTP requests and WebSocket sessions by route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "expressnet_http_request_duration_seconds",
            "Time from request to the end of the response, by route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("expressnet_http_requests_in_flight", "HTTP requests being answered.", registry=r)
        self.jobs = Gauge(
            "expressnet_inference_jobs_in_flight", "Admitted inference jobs (running or queued).", registry=r
        )
        self.rejected = Counter(
            "expressnet_inference_rejected", "Inference jobs refused because the queue was full (503).", registry=r
        )
        self.faces = Counter("expressnet_faces", "Faces found, by endpoint.", ["endpoint"], registry=r)
        self.frames = Counter(
            "expressnet_frames", "Video and stream frames processed, by endpoint.", ["endpoint"], registry=r
        )
        self.inference = Histogram(
            "expressnet_inference_duration_seconds",
            "Detector + classifier time per image or frame.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
