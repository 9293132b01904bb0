"""The metric families Parley exports whose values are *pushed* (counters, histograms).

Names are fixed (dashboards and alerts rely on them; see ``deploy/grafana/``). The
gauges read from the application's objects at scrape time live in
:mod:`control.metrics.collector`; this module holds what is counted as it happens
(signaling requests, channel round trips, chat messages) or sampled on an interval
(transport bytes, consumer scores). Everything is registered in one
:class:`~prometheus_client.CollectorRegistry` per application, so two apps in one
process (tests, a cluster of nodes) never mix their numbers. The worker channel's
histogram is :mod:`control.metrics.channel` (a cheaper hook than ``observe``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["SCORE_BUCKETS", "SIGNALING_BUCKETS", "Families"]

#: Signaling requests: from sub-millisecond (pause) to seconds (a join on a busy node).
SIGNALING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: mediasoup consumer scores are integers 0..10.
SCORE_BUCKETS = tuple(float(score) for score in range(11))


class Families:
    """The pushed families of one application, in its own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.signaling_requests = Counter(
            "parley_signaling_requests",
            "Signaling (protoo) requests answered, by method and outcome (ok or the error code)",
            ["method", "outcome"],
            registry=registry,
        )
        self.signaling_seconds = Histogram(
            "parley_signaling_request_seconds",
            "Time to answer a signaling request, by method",
            ["method"],
            buckets=SIGNALING_BUCKETS,
            registry=registry,
        )
        self.transport_bytes = Counter(
            "parley_transport_bytes",
            "Bytes through the workers' transports (sampled), by direction (in, out) and worker",
            ["direction", "worker"],
            registry=registry,
        )
        self.consumer_score = Histogram(
            "parley_consumer_score",
            "Scores of the consumers (0-10), one observation per consumer per sample",
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.chat_messages = Counter(
            "parley_chat_messages",
            "Chat messages stored (user and system messages)",
            registry=registry,
        )
