"""
Client threads that deliver numbered messages until the server is killed,
recording which were acknowledged and with what UID: the crash tests of LMTP
and IMAP APPEND share it.  A subclass says how to connect and send one.
"""

from __future__ import annotations

import threading


class Burst:
    label = b"burst"
    # Sizes vary so that a kill can land in the middle of a body write.
    spread = 2000
    # Exceptions that mean the server went away.
    gone: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, port: int, threads: int, kill_after: int):
        self.port = port
        self.kill_after = kill_after
        self.lock = threading.Condition()
        self.acknowledged: dict[int, int] = {}  # message number -> UID
        self.next_number = 0
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    @classmethod
    def message(cls, number: int) -> bytes:
        filler = b"".join(b"%d filler line %05d\r\n" % (number, n) for n in range((number * 397) % cls.spread))
        header = b"Message-ID: <%s-%d@example.org>\r\nSubject: %s %d\r\n\r\n" % (cls.label, number, cls.label, number)
        return header + filler

    def take_number(self) -> int | None:
        with self.lock:
            if len(self.acknowledged) >= self.kill_after + 50:
                return None  # the kill never came: stop rather than run forever
            self.next_number += 1
            return self.next_number

    def connect(self):
        """A logged-in client, usable as a context manager."""
        raise NotImplementedError

    def send(self, client, number: int) -> int | None:
        """Deliver message ``number``; its UID if acknowledged, else None."""
        raise NotImplementedError

    def run(self):
        try:
            with self.connect() as client:
                while (number := self.take_number()) is not None:
                    uid = self.send(client, number)
                    if uid is None:
                        continue
                    with self.lock:
                        self.acknowledged[number] = uid
                        self.lock.notify_all()
        except self.gone:
            pass  # the server was killed

    def wait_for_acknowledgements(self, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: len(self.acknowledged) >= self.kill_after, timeout)

    def run_until_killed(self, server) -> dict[int, int]:
        """
        Start the threads, kill -9 ``server`` once ``kill_after`` messages
        were acknowledged, wait for the threads; the acknowledged messages.
        """
        try:
            for thread in self.threads:
                thread.start()
            assert self.wait_for_acknowledgements(timeout=120), "the burst did not get going"
        finally:
            server.kill()
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive()
        acknowledged = dict(self.acknowledged)
        assert len(acknowledged) >= self.kill_after
        return acknowledged
