"""
The server's heap settled once it runs (gateway/heap.py): start-up's
objects frozen out of the collector's full passes, its garbage collected
first.  Each check runs in a process of its own: freezing the test
runner's heap would keep its cycles for the rest of the run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_settle_collects_start_up_garbage_then_freezes_the_rest():
    out = run_python("""
        import gc, weakref
        from gateway.heap import settle

        class Node:
            pass

        kept = [Node() for _ in range(10_000)]
        garbage = Node()
        garbage.self = garbage
        gone = weakref.ref(garbage)
        del garbage
        gc.disable()  # only settle() collects
        frozen = settle()
        print(gone() is None, frozen >= 10_000, len(gc.get_objects(generation=2)) < 1_000)
    """)
    assert out.split() == ["True", "True", "True"]


def test_the_server_settles_its_heap_once_its_services_run(tmp_path):
    # The twistd plugin's service, started as twistd starts it.
    out = run_python("""
        import gc, sys
        from twisted.internet import reactor
        from gateway.tap import Options, makeService

        options = Options()
        options.parseOptions(["--data", sys.argv[1], "--pop3", "tcp:0:interface=127.0.0.1",
                              "--imap", "tcp:0:interface=127.0.0.1", "--lmtp", "tcp:0:interface=127.0.0.1"])
        service = makeService(options)
        service.privilegedStartService()
        reactor.callWhenRunning(service.startService)
        print(gc.get_freeze_count())

        def report():
            print(gc.get_freeze_count())
            service.stopService().addBoth(lambda _: reactor.stop())

        reactor.callLater(0.5, report)
        reactor.run()
    """, str(tmp_path / "data"))
    before, after = map(int, out.split())
    # Twisted, the store and the protocols: tens of thousands of objects.
    assert before == 0 and after > 50_000
