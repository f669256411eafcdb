"""Prometheus metrics, in a registry of the app's own (several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_RTF_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)


# Engine.report() keys, as gauges: the continuous loop's batch and its mean step and decode-stage times.
_ENGINE_GAUGES = (
    ("batch_rows", "qwen_stream_batch_rows", "Rows in the running batch"),
    ("waiting", "qwen_stream_waiting_heads", "Utterances waiting for a batch slot (one per client at most)"),
    ("step_seconds", "qwen_stream_step_seconds", "Mean talker + code predictor time of one step"),
    ("decode_seconds", "qwen_stream_decode_seconds", "Mean decode-stage time after one step"),
    ("prefill_seconds", "qwen_stream_prefill_seconds", "Mean time of one prefill of the rows joining at a step"),
    ("estimated_wait_seconds", "qwen_stream_estimated_wait_seconds", "Estimated wait for a batch slot"),
    ("max_batch", "qwen_stream_batch_capacity", "Batch rows this replica runs at most (--max-batch)"),
    ("load", "qwen_stream_load", "Rows in use plus waiting heads, per batch row (1: full; autoscale on this)"),
)


def _reading(report: Callable[[], Mapping[str, object]], key: str) -> Callable[[], float]:
    def read() -> float:
        value = report().get(key, 0)
        return float(value) if isinstance(value, int | float) else 0.0

    return read


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        active_streams: Callable[[], float],
        queue_depth: Callable[[], float],
        engine_report: Callable[[], Mapping[str, object]] = dict,
    ):
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
        for key, name, about in _ENGINE_GAUGES:
            Gauge(name, about, registry=self.registry).set_function(_reading(engine_report, key))

    def render(self) -> bytes:
        return generate_latest(self.registry)
