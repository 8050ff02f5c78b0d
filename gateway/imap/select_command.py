"""
SELECT and EXAMINE (RFC 3501 6.3.1, 6.3.2; CONDSTORE and QRESYNC, RFC 7162
3.1.2.1, 3.2.5) and IDLE (RFC 2177): how a session comes to have a
selected mailbox, and waits on it.

A mixin of ``gateway.imap.server.IMAPServer``.  A new view starts from the
picture of the mailbox another session already has, if there is one
(``SnapshotRegistry``, shared, not copied), and catches up from there.
"""

from __future__ import annotations

from gateway.imap import resync
from gateway.imap.arguments import astring, select_parameters
from gateway.imap.errors import Bad, bad
from gateway.imap.responses import OK, Condition, Continuation, Data, Exists, Recent
from gateway.imap.snapshot import Snapshot
from gateway.imap.view import SelectedView

# Dovecot's imap_idle_notify_interval: keeps NAT and firewall state alive.
IDLE_KEEPALIVE = 120.0


class SelectCommands:
    def do_SELECT(self, tag, name, parameters=resync.SelectParameters(), readonly=False):
        self.run_command(tag, self._select, name, parameters, readonly)

    def do_EXAMINE(self, tag, name, parameters=resync.SelectParameters()):
        self.do_SELECT(tag, name, parameters, readonly=True)

    async def _select(self, wire_name, parameters, readonly):
        if parameters.qresync is not None and not self.qresync:
            # RFC 7162 3.2.5
            raise bad(b"QRESYNC parameter without ENABLE QRESYNC")
        if self.view is not None:
            # RFC 7162 3.2.11: what follows is about the new mailbox (owed
            # by any server that advertises CONDSTORE).
            self.send(Condition(OK, b"[CLOSED] Previous mailbox closed"))
        # Held until the new view is made: SELECT of the same mailbox again
        # starts from it.
        previous = self.view
        self._deselect()
        if parameters.condstore:
            # Its HIGHESTMODSEQ comes with the SELECT answer below.
            self.condstore = True
        name = self.mailbox_name(wire_name)
        info = await self.account.select(name)
        # Another session's picture of the mailbox, if there is one, is a
        # start that needs only what changed since (and is shared, not copied).
        snapshots = self.factory.snapshots
        start = snapshots.latest(info.id, info.uidvalidity)
        if start is None:
            start = Snapshot.build(await self.store.list_flags(info.id)), info.highestmodseq
        snapshot, modseq = start
        view = SelectedView(info.id, info.uidvalidity, snapshot, modseq, readonly, registry=snapshots)
        view.apply(await self.store.changes_since(info.id, modseq))
        view.catch_up()
        # RFC 9051 E.11, E.12: IMAP4rev2 has neither \Recent nor UNSEEN.
        if not readonly and not self.imap4rev2:
            view.add_recent(await self.store.claim_recent(info.id))
        elif not self.imap4rev2:
            # RFC 3501 6.3.2: EXAMINE reports \Recent without claiming it.
            # Unclaimed messages are the newest ones: the top of the view.
            count = min(await self.store.count_recent(info.id), view.exists)
            if count:
                view.add_recent(view.uids[view.exists - count:])
        for line in view.flags_lines():
            self.send(Data(line))
        self.send(Exists(view.exists))
        unseen = None
        if not self.imap4rev2:
            self.send(Recent(view.recent_count))
            unseen = view.first_unseen()
        if unseen is not None:
            self.send(Condition(OK, b"[UNSEEN %d] First unseen message" % unseen))
        self.send(Condition(OK, b"[UIDVALIDITY %d] UIDs valid" % info.uidvalidity))
        uidnext = max(info.uidnext, view.largest_uid + 1)
        self.send(Condition(OK, b"[UIDNEXT %d] Predicted next UID" % uidnext))
        if self.condstore:
            # RFC 7162 3.1.2.1
            self.send(Condition(OK, b"[HIGHESTMODSEQ %d] Highest" % view.modseq))
        known = parameters.qresync
        if known is not None and known.uidvalidity == info.uidvalidity:
            # RFC 7162 3.2.5.1: as UID FETCH known-uids (FLAGS)
            # (CHANGEDSINCE modseq VANISHED); another UIDVALIDITY means the
            # client starts over, and nothing more is said.
            await self.report_changes(view, known.modseq, known.known_uids, flags=True)
        if self.imap4rev2:
            # RFC 9051 6.3.2: the mailbox's LIST response.
            self.send(await self.listing_of(name))
        self.view = view
        del previous
        self.state = "select"
        self._unsubscribe = self.store.changes.subscribe(info.id, self._on_change)
        return b"[READ-ONLY] EXAMINE completed" if readonly else b"[READ-WRITE] SELECT completed"

    def _deselect(self):
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.view = None
        self.forget_saved()
        if self.state == "select":
            self.state = "auth"

    def do_IDLE(self, tag):
        self.send(Continuation(b"idling"))
        self._idle_tag = tag
        self.parseState = "idle"
        # RFC 2177: IDLE is activity only until the idle timeout (the client
        # re-issues it within 29 minutes); meanwhile an untagged OK every
        # few minutes keeps NAT and firewall state open, as Dovecot does.
        self._keepalive = self.reactor.callLater(IDLE_KEEPALIVE, self._still_here)
        if self.view is not None:
            # RFC 2177: report at once what is pending.
            self._on_change(self.view.mailbox_id, self.view.modseq + 1)

    def _still_here(self):
        self.send(Condition(OK, b"Still here"))
        self._keepalive = self.reactor.callLater(IDLE_KEEPALIVE, self._still_here)

    def _end_idle(self):
        self._idle_tag = None
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None

    def parse_idle(self, line):
        tag = self._idle_tag
        self._end_idle()
        self.parseState = "command"
        if line.strip().upper() != b"DONE":
            self.fail(tag, Bad(b"Expected DONE"))
            return
        self.run_command(tag, self._done, b"IDLE terminated")

    auth_SELECT = select_SELECT = (do_SELECT, astring, select_parameters)
    auth_EXAMINE = select_EXAMINE = (do_EXAMINE, astring, select_parameters)
    auth_IDLE = select_IDLE = (do_IDLE,)
