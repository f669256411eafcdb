"""Prometheus metrics, in a registry of the app's own (several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_RTF_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, active_streams: Callable[[], float], queue_depth: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "qwen_stream_requests", "Finished speech requests by outcome", ["outcome"], registry=self.registry
        )
        self.ttfb = Histogram(
            "qwen_stream_ttfb_seconds",
            "Request received to first audio byte sent",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rtf = Histogram(
            "qwen_stream_rtf", "Compute time / audio time per request", buckets=_RTF_BUCKETS, registry=self.registry
        )
        self.audio_seconds = Counter("qwen_stream_audio_seconds", "Seconds of audio streamed", registry=self.registry)
        self.interrupts = Counter(
            "qwen_stream_interrupts", "Interrupt calls that stopped or dropped work", registry=self.registry
        )
        self.active = Gauge("qwen_stream_active_streams", "Utterances being generated", registry=self.registry)
        self.active.set_function(active_streams)
        self.queue = Gauge("qwen_stream_queue_depth", "Utterances waiting in client queues", registry=self.registry)
        self.queue.set_function(queue_depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
