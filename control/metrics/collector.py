"""Gauges read from the application's objects when Prometheus scrapes, never before.

:class:`StateCollector` is a prometheus-client custom collector: ``collect()`` walks
the rooms, the worker pool, the recordings, the upload queue and the last sample of
the event outbox (:mod:`control.metrics.sampler`), and yields fresh metric families.
Nothing is counted on a hot path; a scrape costs a walk over dicts. Worker CPU and
memory come from ``/proc/<pid>`` (no request to the worker), or from the worker's
last sampled ``getResourceUsage`` where ``/proc`` is not available.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.pipe_transport import PipeTransport

if TYPE_CHECKING:
    from control.rooms.manager import RoomManager
    from control.storage.uploads import UploadQueue
    from workers.worker import Worker
    from workers.worker_pool import WorkerPool

__all__ = [
    "ClientLimitsCollector",
    "ClientLimitsView",
    "OutboxSample",
    "ProcStats",
    "RecordingsView",
    "StateCollector",
    "WorkerUsage",
    "proc_stats",
    "worker_label",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
KINDS = ("audio", "video")


class RecordingsView(Protocol):
    """What metrics reads of the recording service."""

    @property
    def active(self) -> Sized: ...

    @property
    def failures(self) -> int: ...


class ClientLimitsView(Protocol):
    """What metrics reads of the per-client limits (:class:`control.ratelimit.ClientLimits`)."""

    @property
    def refused(self) -> Mapping[str, int]: ...

    @property
    def connections(self) -> Mapping[str, int]: ...

    def tables(self) -> Mapping[str, Sized]: ...


@dataclass
class OutboxSample:
    """The event outbox as last sampled (its count is a database query: not at scrape time)."""

    pending: int = 0
    oldest_seconds: float = 0.0


@dataclass
class WorkerUsage:
    """A worker's ``getResourceUsage`` as last sampled (fallback without ``/proc``)."""

    cpu_seconds: float = 0.0
    rss_bytes: float = 0.0


@dataclass(frozen=True)
class ProcStats:
    cpu_seconds: float
    rss_bytes: float


def proc_stats(pid: int, proc: Path = Path("/proc")) -> ProcStats | None:
    """CPU time (user + system) and resident memory of ``pid`` from ``/proc``; None if unreadable."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        statm = (proc / str(pid) / "statm").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # after the command: state(0) ppid(1) ... utime(11) stime(12)
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    rss = int(statm.split()[1]) * _PAGE_SIZE
    return ProcStats(cpu_seconds=cpu, rss_bytes=float(rss))


def worker_label(worker: Worker) -> str:
    """A worker's label: its slot in the pool (stable across a respawn), else its pid."""
    index = worker.app_data.get("index")
    return str(index) if index is not None else str(worker.pid)


@dataclass(eq=False)  # registered in a dict: hashed by identity
class StateCollector(Collector):
    """The scrape-time gauges of one application (see the module doc)."""

    rooms: RoomManager
    pool: WorkerPool
    recordings: Callable[[], RecordingsView | None]
    uploads: UploadQueue | None = None
    outbox: OutboxSample = field(default_factory=OutboxSample)
    usage: dict[str, WorkerUsage] = field(default_factory=dict)

    def collect(self) -> Iterator[Metric]:
        yield from self._rooms()
        yield from self._media()
        yield from self._workers()
        yield from self._recordings()
        yield from self._queues()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the app's state: no check at registration

    def _rooms(self) -> Iterator[Metric]:
        rooms = [room for room in self.rooms.rooms.values() if not room.closed]
        yield GaugeMetricFamily("parley_rooms", "Open rooms", value=len(rooms))
        peers = sum(len(room.joined_peers()) for room in rooms)
        yield GaugeMetricFamily("parley_peers", "Joined peers (WebSocket participants, broadcasters excluded)", peers)

    def _media(self) -> Iterator[Metric]:
        producers = dict.fromkeys(KINDS, 0)
        consumers = dict.fromkeys(KINDS, 0)
        for worker in self.pool.workers:
            for router in list(worker.routers):
                for transport in list(router.transports.values()):
                    if isinstance(transport, PipeTransport):
                        continue  # a piped track is the same track again, on another router
                    for producer in transport.producers.values():
                        producers[producer.kind] = producers.get(producer.kind, 0) + 1
                    for consumer in transport.consumers.values():
                        consumers[consumer.kind] = consumers.get(consumer.kind, 0) + 1
        family = GaugeMetricFamily(
            "parley_producers", "Producers on the workers (pipe producers excluded)", labels=["kind"]
        )
        for kind, count in producers.items():
            family.add_metric([kind], count)
        yield family
        family = GaugeMetricFamily(
            "parley_consumers", "Consumers on the workers (pipe consumers excluded)", labels=["kind"]
        )
        for kind, count in consumers.items():
            family.add_metric([kind], count)
        yield family

    def _workers(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("parley_worker_up", "1 while the worker process runs", labels=["worker"])
        cpu = CounterMetricFamily(
            "parley_worker_cpu_seconds", "CPU time (user + system) of the worker process", labels=["worker"]
        )
        rss = GaugeMetricFamily("parley_worker_rss_bytes", "Resident memory of the worker process", labels=["worker"])
        live = {worker_label(worker): worker for worker in self.pool.workers}
        for index in range(self.pool.num_workers):
            up.add_metric([str(index)], 1 if str(index) in live else 0)
        for label, worker in live.items():
            stats = proc_stats(worker.pid)
            if stats is None:
                sampled = self.usage.get(label)
                if sampled is None:
                    continue
                stats = ProcStats(sampled.cpu_seconds, sampled.rss_bytes)
            cpu.add_metric([label], stats.cpu_seconds)
            rss.add_metric([label], stats.rss_bytes)
        yield up
        yield cpu
        yield rss

    def _recordings(self) -> Iterator[Metric]:
        service = self.recordings()
        active = len(service.active) if service is not None else 0
        failures = service.failures if service is not None else 0
        yield GaugeMetricFamily("parley_recordings_active", "Recordings running", value=active)
        yield CounterMetricFamily(
            "parley_recording_failures",
            "Recordings that failed to start or reported an error while running",
            value=failures,
        )

    def _queues(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "parley_outbox_pending", "Events waiting in the outbox for the broker (sampled)", value=self.outbox.pending
        )
        yield GaugeMetricFamily(
            "parley_outbox_oldest_seconds",
            "Age of the oldest event waiting in the outbox (sampled; 0 when empty)",
            value=self.outbox.oldest_seconds,
        )
        pending = len(self.uploads.jobs()) if self.uploads is not None else 0
        yield GaugeMetricFamily("parley_upload_queue_pending", "Uploads queued or being retried", value=pending)


@dataclass(eq=False)  # registered in a dict: hashed by identity
class ClientLimitsCollector(Collector):
    """The per-client limits at scrape time: refusals by code, open WebSockets and the
    addresses holding them, and how many clients each table tracks (its memory)."""

    limits: ClientLimitsView

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "parley_rate_limited", "Requests and connections refused by a per-client limit, by code", labels=["code"]
        )
        for code, count in sorted(self.limits.refused.items()):
            refused.add_metric([code], count)
        yield refused
        connections = self.limits.connections
        yield GaugeMetricFamily(
            "parley_client_connections", "Open signaling WebSockets counted by address", value=sum(connections.values())
        )
        yield GaugeMetricFamily(
            "parley_client_addresses", "Client addresses holding open signaling WebSockets", value=len(connections)
        )
        tracked = GaugeMetricFamily(
            "parley_rate_limit_tracked", "Clients (addresses or principals) a rate-limit table holds", labels=["table"]
        )
        for name, table in self.limits.tables().items():
            tracked.add_metric([name], len(table))
        yield tracked

    def describe(self) -> Iterator[Metric]:
        return iter(())
