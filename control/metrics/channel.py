"""``parley_channel_request_seconds{method}``: worker channel round trips, counted cheaply.

The channel's ``timing_hook`` runs once per response from a worker, on the channel's
reader: a ``prometheus_client.Histogram.observe`` (a lock, then the buckets) costs a few
microseconds there, a visible share of a 40 us request. :class:`ChannelTimings` counts
into plain lists instead (a ``bisect`` and two additions; everything runs on the event
loop's thread, so no lock) and is a collector that exports them as a histogram when
Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.channel import method_name

__all__ = ["CHANNEL_BUCKETS", "ChannelTimings"]

#: Upper bounds (seconds): tens of microseconds when idle, up to a second under load.
CHANNEL_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class ChannelTimings(Collector):
    """Counts per FlatBuffers method: ``[count per bucket..., count above the last, sum]``."""

    def __init__(self, buckets: tuple[float, ...] = CHANNEL_BUCKETS) -> None:
        self.buckets = buckets
        self._by_method: dict[int, list[float]] = {}

    def observe(self, method: int, seconds: float) -> None:
        """The channel ``timing_hook``."""
        counts = self._by_method.get(method)
        if counts is None:
            counts = self._by_method[method] = [0.0] * (len(self.buckets) + 2)
        counts[bisect_left(self.buckets, seconds)] += 1
        counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "parley_channel_request_seconds",
            "Round trip of a request to a mediasoup worker over its pipe channel, by method",
            labels=["method"],
        )
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        for method, counts in sorted(self._by_method.items()):
            cumulative, running = [], 0.0
            for bound, count in zip(bounds, counts[:-1], strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([method_name(method)], cumulative, sum_value=counts[-1])
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())
