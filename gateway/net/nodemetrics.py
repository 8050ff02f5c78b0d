"""
The metrics of a node that serves from several processes (``[server]
workers``): each process counts into files of its own in one directory,
and the metrics page adds them up.

prometheus_client's multiprocess mode does the counting: once ``share``
has run, every metric value created after lives in an mmap'ed file named
for the process (``counter_PID.db``...), and ``MultiProcessCollector`` reads
them all at a scrape.  Counters and histograms are summed, dead processes'
included (a restarted worker must not take its connections out of a
total); ``gateway_connections_open`` sums the live processes only, and the
reload gauge shows the worst of them (gauge modes in ``metrics.Metrics``).

The reactor's turns are counted without a lock in ``turns.TurnTimer``,
which no file backs; ``SharedTurns`` copies a process's timer into gauges
of its own (at most a second late, and at each scrape in the process that
serves it), and ``NodeCollector`` turns those back into the histogram and
the longest turn the page shows for one process: buckets summed, the
longest the longest of any process.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, values
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.utils import floatToGoString

from gateway.net.turns import TurnTimer

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"

# Gauges that carry the turns between processes; the page shows them as
# the names of turns.py, never under these.
_BUCKETS = "gateway_node_turns_bucket"
_TOTAL = "gateway_node_turns_seconds"
_LONGEST = "gateway_node_turns_longest_seconds"
HISTOGRAM = "gateway_reactor_turn_cpu_seconds"
LONGEST = "gateway_reactor_longest_turn_cpu_seconds"


def share(directory: Path, fresh: bool) -> None:
    """
    Count every metric made from now on in ``directory``, with the other
    processes of the node.  ``fresh`` (the main process, before any worker
    starts) empties it first: counts left by an earlier run would be added
    to this one's.
    """
    if fresh:
        shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700)
    # Read by prometheus_client when it opens a process's files; worker
    # processes inherit it.
    os.environ[ENVIRONMENT] = str(directory)
    values.ValueClass = values.MultiProcessValue()


def process_ended(directory: Path, pid: int) -> None:
    """A worker is gone: its connections are open no more."""
    mark_process_dead(pid, str(directory))


class SharedTurns:
    """One process's ``TurnTimer``, as gauges the other processes can read."""

    def __init__(self, turns: TurnTimer, registry: CollectorRegistry) -> None:
        self.turns = turns
        buckets = Gauge(_BUCKETS, "Reactor turns per bucket", ["le"], registry=registry, multiprocess_mode="sum")
        bounds = (*turns.buckets, float("inf"))
        self._buckets = [buckets.labels(floatToGoString(bound)) for bound in bounds]
        self._total = Gauge(_TOTAL, "Reactor turn CPU", registry=registry, multiprocess_mode="sum")
        self._longest = Gauge(_LONGEST, "Longest reactor turn", registry=registry, multiprocess_mode="max")

    def publish(self) -> None:
        for gauge, count in zip(self._buckets, self.turns.counts):
            gauge.set(count)
        self._total.set(self.turns.total)
        self._longest.set(self.turns.longest)


class NodeCollector:
    """Every process's metrics from ``directory``, the turns shown as one process shows them."""

    def __init__(self, directory: Path) -> None:
        self._processes = MultiProcessCollector(None, str(directory))

    def collect(self):
        turns = {}
        for family in self._processes.collect():
            if family.name in (_BUCKETS, _TOTAL, _LONGEST):
                turns[family.name] = family.samples
            else:
                yield family
        counts = sorted(
            ((float(sample.labels["le"]), sample.value) for sample in turns.get(_BUCKETS, ())),
        )
        cumulative, buckets = 0.0, []
        for bound, count in counts:
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        if buckets:
            yield HistogramMetricFamily(
                HISTOGRAM,
                "CPU of the reactor thread from one wait for events to the next",
                buckets=buckets,
                sum_value=sum(sample.value for sample in turns.get(_TOTAL, ())),
            )
        yield GaugeMetricFamily(
            LONGEST,
            "The longest turn of any reactor thread of the node since start, in its CPU seconds",
            value=max((sample.value for sample in turns.get(_LONGEST, ())), default=0.0),
        )


def node_registry(directory: Path) -> CollectorRegistry:
    """What the metrics page of a node of several processes shows."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(directory))
    return registry
