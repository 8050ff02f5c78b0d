"""
LMTP and quotas (RFC 9208 with RFC 3463 X.2.2): a copy that would take its
user over quota is refused for that recipient alone, for good (552 5.2.2)
or, under [quota] full_tempfail, for now (452 4.2.2).
"""

import attrs
from twisted.internet.task import Clock

from gateway.config import loads
from gateway.lmtp.server import LMTPFactory
from gateway.policy.quota import Quotas
from tests.deferreds import result_of
from tests.lmtp.test_server import HOST, TRANSACTION_ID, StoreSession

BODY = b"Subject: hi\r\n\r\n" + b"x" * 2000 + b"\r\n"


def factory(store, config_text, user_limits=lambda name: None):
    config = loads(config_text)
    return LMTPFactory(store, frozenset({"alice", "bob"}), attrs.evolve(config, hostname=HOST), Clock(),
                       new_transaction_id=lambda: TRANSACTION_ID, quotas=Quotas(config, user_limits))


def deliver(built, recipients):
    session = StoreSession(built)
    session.start(recipients=recipients)
    answered = session.send(BODY + b".\r\n")
    built.reactor.advance(0)
    return answered + session.replies()


def usage(store, user):
    return result_of(store.quota_usage(user))


def test_over_storage_is_refused_for_good_for_that_recipient_only(store):
    # alice may keep 3 KB: the first copy (2 KB and its trace) fits, the second does not.
    built = factory(store, "", lambda name: {"storage": 3 * 1024} if name == "alice" else None)
    assert deliver(built, [b"<alice@a.test>", b"<bob@b.test>"]) == [
        b"250 2.0.0 <alice@a.test> Saved as UID 1",
        b"250 2.0.0 <bob@b.test> Saved as UID 1",
    ]
    assert deliver(built, [b"<alice@a.test>", b"<bob@b.test>"]) == [
        b"552 5.2.2 <alice@a.test> Mailbox full: quota exceeded",
        b"250 2.0.0 <bob@b.test> Saved as UID 2",
    ]
    assert usage(store, "alice").messages == 1
    assert usage(store, "bob").messages == 2


def test_over_the_message_count_for_now_under_full_tempfail(store):
    built = factory(store, "[quota]\nmessages = 1\nfull_tempfail = true")
    assert deliver(built, [b"<alice@a.test>"]) == [b"250 2.0.0 <alice@a.test> Saved as UID 1"]
    assert deliver(built, [b"<alice@a.test>"]) == [
        b"452 4.2.2 <alice@a.test> Mailbox full: quota exceeded, try again later"
    ]
    # Room again once mail is deleted.
    inbox = result_of(store.get_mailbox("alice", "INBOX"))
    result_of(store.expunge(inbox.id, [1]))
    assert deliver(built, [b"<alice@a.test>"]) == [b"250 2.0.0 <alice@a.test> Saved as UID 2"]


def test_no_limits_no_refusal(store):
    built = factory(store, "")
    for uid in range(1, 4):
        assert deliver(built, [b"<alice@a.test>"]) == [b"250 2.0.0 <alice@a.test> Saved as UID %d" % uid]
