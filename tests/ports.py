"""
Loopback ports for the engines tests start: free now, and nobody else's to
take before the engine binds them.

A port the kernel hands out for ``bind(port 0)`` is in the ephemeral range,
where any outgoing connection (this run's clients, an engine's own) may take
it between the pick and the engine's bind; and tests running side by side
(pytest-xdist workers) would pick from the same pool.  So ports come from
below the ephemeral range, each worker from a slice of its own, never the
same one twice in a process.  ``port + 10000`` stays under the ephemeral
range as well, for SeaweedFS, which binds it for gRPC.
"""

import os
import random
import socket

LOWEST = 10000
GRPC_OFFSET = 10000

_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _slice() -> range:
    top = _ephemeral_floor() - GRPC_OFFSET
    # PYTEST_XDIST_WORKER is "gw0", "gw1", ...; one process without it.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), index + 1)
    width = (top - LOWEST) // count
    return range(LOWEST + index * width, LOWEST + (index + 1) * width)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nobody listens on now, with ``port + 10000`` free as well."""
    candidates = _slice()
    for _ in range(1000):
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        if _bindable(port) and _bindable(port + GRPC_OFFSET):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {candidates.start}-{candidates.stop - 1}")
