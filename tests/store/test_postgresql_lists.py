"""
Users' lists of mailboxes across PostgreSQL nodes (IMAP NOTIFY MailboxName,
RFC 5465 5.4): a node's sessions watching a list hear of every change to it
made on any node, once, and look again after the node listened anew.
"""

from __future__ import annotations

from tests.deferreds import result_of
from tests.store.contract import inbox
from tests.store.test_postgresql import cut_listening, listening, listening_nodes, settle, turn_until  # noqa: F401


def watch_lists(node, heard, *users):
    for user in users:
        node.changes.subscribe_mailboxes(user, heard.append)


def settle_lists(node, heard, users: int) -> None:
    """As ``settle``: listening starts by telling every list watcher to look again; forget that."""
    settle(node, heard)
    assert turn_until(lambda: len(heard) == users, 1.0)
    heard.clear()


def test_a_list_changed_on_any_node_is_told_once_to_its_watchers(listening_nodes):
    a, b = listening_nodes
    inbox(a, "alice"), inbox(a, "bob")
    heard = []
    watch_lists(a, heard, "alice", "bob")
    assert turn_until(lambda: listening(b), 10)
    settle_lists(a, heard, 2)
    result_of(b.create_mailbox("alice", "Projects"))
    assert turn_until(lambda: heard, 1.0), "node A heard nothing of node B's CREATE within 1 s"
    result_of(b.rename_mailbox("alice", "Projects", "Done"))
    assert turn_until(lambda: len(heard) == 2, 1.0)
    result_of(b.delete_mailbox("alice", "Done"))
    assert turn_until(lambda: len(heard) == 3, 1.0)
    # Its own change is told when it commits; its NOTIFY, coming back, is not told again.
    result_of(a.create_mailbox("bob", "Mine"))
    turn_until(lambda: False, 0.3)
    assert heard == ["alice"] * 3 + ["bob"]


def test_a_watcher_whose_node_stopped_listening_is_told_to_look_again(listening_nodes, postgres_database):
    a, b = listening_nodes
    inbox(a, "alice")
    heard = []
    watch_lists(a, heard, "alice")
    settle_lists(a, heard, 1)
    listener, good_dsn = cut_listening(a, postgres_database)
    result_of(b.create_mailbox("alice", "Missed"))
    turn_until(lambda: False, 0.3)
    assert heard == []
    listener._dsn = good_dsn
    assert turn_until(lambda: heard, 10), "A never told its watcher to look again"
    assert heard == ["alice"]
