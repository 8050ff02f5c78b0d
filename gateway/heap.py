"""
The server process's heap, settled once it runs: what start-up built is
kept out of the garbage collector's full passes.

A full collection walks every object the collector tracks, and runs on the
reactor thread in the middle of whatever allocates: with the start-up heap
(Twisted, the store's drivers, boto3's service models: hundreds of
thousands of objects that live as long as the process) each one took
95-125 ms, a stall every session felt; 1,000 IDLE sessions woken by one
delivery saw their EXISTS that much later.  Frozen (``gc.freeze``), those
objects are no longer walked; what sessions allocate later is collected as
before.  Objects frozen and later dropped are freed by their reference
counts as ever; only a cycle among them would stay, and start-up's objects
are the process's own for its lifetime.

No Twisted import here.
"""

from __future__ import annotations

import gc


def settle() -> int:
    """
    Collect what start-up left as garbage, then freeze what remains.

    @return: the objects frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
