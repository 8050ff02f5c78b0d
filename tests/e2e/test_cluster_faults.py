"""
Two gateway nodes over one private PostgreSQL and SeaweedFS under load
(tests/e2e/test_cluster.py starts them): many deliveries into one mailbox
through both at once, one node killed with SIGKILL in the middle of
deliveries and STOREs, and PostgreSQL restarted while both serve.  Clients
are real ones (smtplib's LMTP, imapclient) on threads of their own; what was
acknowledged to a client is what must be there afterwards.
"""

from __future__ import annotations

import imaplib
import smtplib
import threading
import time

import imapclient
import pytest

from tests.e2e.test_cluster import imap, lmtp_deliver, nodes, start_nodes  # noqa: F401 (fixture)


def body(subject: str) -> bytes:
    return f"From: load@example.org\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


class Deliverer(threading.Thread):
    """
    One LMTP client delivering ``count`` messages to alice, one
    transaction each, until done or stopped; ``acked`` are the subjects the
    server answered 250 for, ``refused`` the replies of the others.
    """

    def __init__(self, node, name: str, count: int, stop: threading.Event | None = None):
        super().__init__(daemon=True)
        self.node, self.name_, self.count = node, name, count
        self.stop = stop or threading.Event()
        self.acked: list[str] = []
        self.refused: list[tuple[int, bytes]] = []
        self.broken: Exception | None = None

    def run(self):
        try:
            lmtp = smtplib.LMTP("127.0.0.1", self.node.port("lmtp"), timeout=30)
        except OSError as e:
            self.broken = e
            return
        try:
            for n in range(self.count):
                if self.stop.is_set():
                    break
                subject = f"{self.name_}-{n}"
                try:
                    lmtp.sendmail("load@example.org", ["alice@example.org"], body(subject))
                    self.acked.append(subject)
                except smtplib.SMTPRecipientsRefused as e:
                    self.refused.append(e.recipients["alice@example.org"])
                    time.sleep(0.05)
                except smtplib.SMTPResponseException as e:
                    self.refused.append((e.smtp_code, e.smtp_error))
                    time.sleep(0.05)
        except (OSError, smtplib.SMTPServerDisconnected) as e:
            self.broken = e
        finally:
            try:
                lmtp.close()
            except OSError:
                pass


def subjects_and_flags(node) -> dict[str, set]:
    """Subject -> flags of every message in alice's INBOX, read through ``node``."""
    client = imap(node)
    try:
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch(client.search("ALL"), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    finally:
        client.logout()
    found = {}
    for data in fetched.values():
        subject = data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip()
        assert subject not in found, f"{subject} stored twice"
        found[subject] = set(data[b"FLAGS"])
    return found


def test_a_thousand_messages_through_both_nodes_at_once(nodes):
    a, b = nodes
    deliverers = [Deliverer(node, f"{label}{n}", 250) for label, node in (("a", a), ("b", b)) for n in range(2)]
    # Watchers on both nodes look again and again while the deliveries run:
    # a UID n+1 seen before n (a later UID committed first) is a hole.
    stop = threading.Event()
    views: dict[str, list[int]] = {"a": [], "b": []}
    problems: list[str] = []

    def watch(label, node):
        client = imap(node)
        client.select_folder("INBOX", readonly=True)
        try:
            while True:
                last = stop.is_set()
                client.noop()
                uids = client.search("ALL")
                if uids != list(range(1, len(uids) + 1)):
                    problems.append(f"node {label} saw UIDs {uids[:3]}...{uids[-3:]} of {len(uids)}")
                    return
                views[label].append(len(uids))
                if last:
                    return
                time.sleep(0.05)
        finally:
            client.logout()

    watchers = [threading.Thread(target=watch, args=item, daemon=True) for item in (("a", a), ("b", b))]
    for thread in watchers + deliverers:
        thread.start()
    for thread in deliverers:
        thread.join(timeout=120)
    stop.set()
    for thread in watchers:
        thread.join(timeout=30)
    assert problems == []
    assert all(d.broken is None and d.refused == [] for d in deliverers)
    acked = {subject for d in deliverers for subject in d.acked}
    assert len(acked) == 1000
    for node in (a, b):
        assert set(subjects_and_flags(node)) == acked
    # Each client's view only grew, and ended with everything.
    for label, counts in views.items():
        assert counts == sorted(counts) and counts[-1] == 1000, label
        assert len(counts) > 3, f"node {label}'s watcher looked only {len(counts)} times"


def test_a_node_killed_during_deliveries_and_stores_loses_nothing_acknowledged(nodes):
    a, b = nodes
    for n in range(20):
        lmtp_deliver(b, f"base-{n}")
    stop = threading.Event()
    stored: dict[str, list[tuple[int, bytes]]] = {"a": [], "b": []}
    store_errors: dict[str, list[Exception]] = {"a": [], "b": []}

    def store_flags(label, node):
        # Each STORE adds a keyword of its own: one acknowledged must be there.
        try:
            client = imap(node)
            client.select_folder("INBOX")
        except Exception as e:  # noqa: BLE001 - recorded, the node may be gone
            store_errors[label].append(e)
            return
        n = 0
        while not stop.is_set():
            n += 1
            uid, keyword = n % 20 + 1, f"K{label}{n}".encode()
            try:
                client.add_flags([uid], [keyword])
            except Exception as e:  # noqa: BLE001
                store_errors[label].append(e)
                return
            stored[label].append((uid, keyword))
        client.logout()

    deliverers = {label: Deliverer(node, f"kill-{label}", 10_000, stop) for label, node in (("a", a), ("b", b))}
    storers = [threading.Thread(target=store_flags, args=item, daemon=True) for item in (("a", a), ("b", b))]
    for thread in [*deliverers.values(), *storers]:
        thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(deliverers["a"].acked) < 20 or len(stored["a"]) < 20):
        time.sleep(0.02)
    a.kill()
    acked_on_b = len(deliverers["b"].acked), len(stored["b"])
    # Node B goes on serving: at least as many more of each as before.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(deliverers["b"].acked) < 2 * acked_on_b[0] + 20
                                           or len(stored["b"]) < 2 * acked_on_b[1] + 20):
        time.sleep(0.02)
    stop.set()
    for thread in [*deliverers.values(), *storers]:
        thread.join(timeout=30)
    assert deliverers["b"].broken is None and deliverers["b"].refused == [] and store_errors["b"] == []
    assert len(deliverers["b"].acked) >= 2 * acked_on_b[0] + 20 and len(stored["b"]) >= 2 * acked_on_b[1] + 20
    assert deliverers["a"].broken is not None or store_errors["a"], "node A's clients never noticed the kill"

    found = subjects_and_flags(b)
    base = {f"base-{n}": n + 1 for n in range(20)}
    acked = [s for d in deliverers.values() for s in d.acked]
    assert set(acked) <= set(found)
    client = imap(b)
    client.select_folder("INBOX", readonly=True)
    flags = {uid: set(data[b"FLAGS"]) for uid, data in client.fetch(list(base.values()), ["FLAGS"]).items()}
    client.logout()
    for label in ("a", "b"):
        for uid, keyword in stored[label]:
            assert keyword in flags[uid], f"STORE {keyword} on UID {uid} through node {label} was acknowledged"
    # The killed node starts again and serves the same mailbox.
    a.start()
    assert set(subjects_and_flags(a)) == set(found)


@pytest.fixture
def impatient_nodes(tmp_path, postgres_database, seaweed):
    """Nodes whose sessions wait a second for the database, not ten: the restart below takes longer."""
    yield from start_nodes(tmp_path, postgres_database, seaweed, "connect_timeout = 1\n")


def test_postgresql_restarted_under_load(impatient_nodes, postgres_cluster):
    a, b = impatient_nodes
    lmtp_deliver(a, "before")
    watcher = imap(a)
    watcher.select_folder("INBOX")
    watcher.idle()
    stop = threading.Event()
    deliverer = Deliverer(b, "restart", 100_000, stop)
    imap_replies: list[str] = []

    # Logged in before the load starts: a login is not what is measured, and
    # on a busy machine it could outwait connect_timeout behind the deliveries.
    client = imap(b)
    client.select_folder("INBOX")

    def store_flags():
        while not stop.is_set():
            try:
                client.add_flags([1], [imapclient.SEEN])
                imap_replies.append("OK")
            except imaplib.IMAP4.error as e:
                imap_replies.append(str(e))
            time.sleep(0.02)
        client.logout()

    storer = threading.Thread(target=store_flags, daemon=True)
    deliverer.start()
    storer.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(deliverer.acked) < 10:
        time.sleep(0.02)
    postgres_cluster.restart(down=3.0)
    restarted = len(deliverer.acked)
    # The nodes reconnect on their own: deliveries and STOREs go through
    # again, and the IDLE session on node A, whose listening connection
    # went with the restart, hears of deliveries through node B.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(deliverer.acked) < restarted + 20:
        time.sleep(0.05)
    events = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(e[1] == b"EXISTS" and e[0] > restarted for e in events):
        events += watcher.idle_check(timeout=0.5)
    stop.set()
    deliverer.join(timeout=30)
    storer.join(timeout=30)
    watcher.idle_done()
    watcher.logout()

    assert deliverer.broken is None
    assert len(deliverer.acked) >= restarted + 20, "deliveries did not resume"
    assert any(e[1] == b"EXISTS" and e[0] > restarted for e in events), "node A's IDLE never heard again"
    # While the database was down: temporary answers only, and clear ones.
    assert deliverer.refused, "no delivery was tried while PostgreSQL was down"
    assert all(400 <= code < 500 for code, _ in deliverer.refused), deliverer.refused
    failed = [reply for reply in imap_replies if reply != "OK"]
    assert all("[UNAVAILABLE]" in reply for reply in failed), failed
    assert imap_replies[-1] == "OK"
    assert set(deliverer.acked) <= set(subjects_and_flags(b))
