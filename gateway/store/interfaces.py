"""
Contracts every store backend provides.

Every method that may block returns a Deferred, so that a networked backend
(PostgreSQL, for several gateway nodes) fits the same contract as the embedded
SQLite one.  A Deferred may fire at once or on a later reactor turn (a write
waits for its commit); it always fires on the reactor thread.  The store
knows nothing of sessions: live views subscribe to the change feed and ask
``changes_since`` for what they missed.

Durability (DESIGN.md): what is acknowledged (``append``, ``copy``,
``move``, ``expunge``, mailbox changes) is durable when its Deferred fires.
A flag change (``store_flags``, ``claim_recent``) is visible to every
session when its Deferred fires and durable within a second.

Mailbox names are text (already decoded from modified UTF-7), with ``/`` as
hierarchy separator.  ``INBOX`` is matched case-insensitively (RFC 3501 5.1);
every other name is case-sensitive.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

# What ``IMailStore.fetch_rows`` reads of a message, by name: RFC822.SIZE
# and MODSEQ (ints); INTERNALDATE as its RFC 3501 date-time, quoted
# (``b'"17-Jul-1996 02:44:25 -0700"'``); ENVELOPE, BODY and BODYSTRUCTURE
# in IMAP syntax, and the header, as delivery stored them (bytes).
FETCH_COLUMNS = ("size", "internaldate", "modseq", "envelope", "body", "bodystructure", "header")


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class NoSuchUser(StoreError):
    """The user has no mailboxes in this store (never created)."""


class NoSuchMailbox(StoreError):
    """The mailbox does not exist."""


class MailboxExists(StoreError):
    """A mailbox with that name exists already."""


class InvalidMailboxName(StoreError):
    """The name is not acceptable (empty, empty hierarchy level, NUL...)."""


class MessageExpunged(StoreError):
    """The message was expunged (possibly by another session)."""


class TemporaryFailure(StoreError):
    """The store cannot complete the operation now (disk full, locked...).

    Callers map this to a temporary protocol error (LMTP 451/452, NO, -ERR
    [SYS/TEMP]); nothing was changed.
    """


class StoreFull(TemporaryFailure):
    """
    The store has no room left (disk full, quota of the store's filesystem):
    a temporary failure that more space cures.  LMTP answers it 452 4.3.1
    (RFC 3463: mail system full); IMAP and POP3 as any temporary failure.
    """


class TooManyDevices(StoreError):
    """A new POP3 device for a mailbox that has as many as it may."""


class NoStore(StoreError):
    """There is no store where the configuration says (``open_maintenance``)."""


class CopyConflict(StoreError):
    """
    A mailbox cannot take a copy of the source's: it is another mailbox of
    the same name (another UIDVALIDITY), or it changed since it was copied.
    """


class IChangeFeed(Interface):
    """
    Tells live sessions that a mailbox changed, whoever changed it.
    """

    def subscribe(mailbox_id, callback):
        """
        Call ``callback(mailbox_id, highestmodseq)`` after each change to the
        mailbox: at once (next reactor turn) for changes made through this
        process, within the poll interval for changes by other processes.
        Several changes may be reported as one call.

        @return: a no-argument callable that ends the subscription.
        """

    def notify(mailbox_id, highestmodseq):
        """
        Announce a change committed by this process.  Backends call this.
        """

    def subscribe_mailboxes(user, callback):
        """
        Call ``callback(user)`` after one of the user's mailboxes is
        created, deleted or renamed (IMAP NOTIFY MailboxName), as
        L{subscribe} does for a mailbox's messages: at once for changes
        through this process, within the poll interval for others.

        @return: a no-argument callable that ends the subscription.
        """

    def notify_mailboxes(user):
        """
        Announce that this process changed the user's list of mailboxes.
        Backends call this.
        """


class IMailStore(Interface):
    """
    The shared store of users' mailboxes and messages.
    """

    changes = Attribute("The L{IChangeFeed} of this store.")

    spool_directory = Attribute(
        "A directory on the store's own disk where a listener may spool a"
        " message while it arrives, so that a full disk shows then; None"
        " where the store has no disk of its own (the system's temporary"
        " directory is used)."
    )

    def close():
        """
        Finish the writes already asked for, make every change durable and
        release the store.  Nothing may be asked of it afterwards.

        @return: Deferred firing with None once done.
        """

    def ensure_user(user):
        """
        Create the user's INBOX and the default special-use folders if the
        user has no mailboxes yet.  Idempotent.

        @return: Deferred firing with None.
        """

    def delete_user(user):
        """
        Remove every mailbox and message of the user.

        @return: Deferred firing with None.
        """

    def list_mailboxes(user):
        """
        @return: Deferred firing with a list of L{MailboxInfo}, sorted by name.
            Fails with L{NoSuchUser} if the user has no mailboxes.
        """

    def get_mailbox(user, name):
        """
        @return: Deferred firing with the L{MailboxInfo}; fails with
            L{NoSuchMailbox}.
        """

    def create_mailbox(user, name, special_use=None):
        """
        Create the mailbox with a fresh UIDVALIDITY (never one this store has
        issued before).  Parent levels are not created (LIST shows them as
        \\Noselect-free non-existent; RFC 3501 6.3.3 lets us choose).

        @return: Deferred firing with the new L{MailboxInfo}; fails with
            L{MailboxExists} or L{InvalidMailboxName}.
        """

    def delete_mailbox(user, name):
        """
        Delete the mailbox and its messages (not its children).  INBOX cannot
        be deleted (L{InvalidMailboxName}).

        @return: Deferred firing with None; fails with L{NoSuchMailbox}.
        """

    def rename_mailbox(user, old_name, new_name):
        """
        Rename the mailbox and every mailbox below it in the hierarchy,
        keeping their UIDVALIDITY.  Renaming INBOX moves its messages to a new
        mailbox of the new name and leaves INBOX empty (RFC 3501 6.3.5).

        @return: Deferred firing with None.
        """

    def set_subscribed(user, name, subscribed):
        """
        Add or remove a subscription.  A subscription may name a mailbox that
        does not exist (RFC 3501 6.3.6).

        @return: Deferred firing with None.
        """

    def list_subscriptions(user):
        """
        @return: Deferred firing with a sorted list of subscribed names.
        """

    def append(mailbox_id, source, flags=frozenset(), internaldate=None, recent=False):
        """
        Store a new message durably and give it the next UID.

        ``source`` is bytes or a binary file positioned at the message start;
        line endings are normalised to CRLF.  The message is parsed once here.
        The Deferred fires only after the body is on disk (fsync + rename) and
        the index row is committed.

        ``recent``: the caller has the mailbox selected read-write and will
        report the message with \\Recent.  A backend may claim it (and any
        other \\Recent message not yet claimed) in the same write, for the
        next ``claim_recent`` of the mailbox in this process to return,
        rather than in a write of its own; or leave it to that call.

        @return: Deferred firing with the L{MessageRecord}; fails with
            L{NoSuchMailbox} or L{TemporaryFailure}.
        """

    def list_messages(mailbox_id):
        """
        @return: Deferred firing with the list of L{MessageRecord}, ascending
            by UID.
        """

    def list_flags(mailbox_id):
        """
        What a session selecting the mailbox needs, and no more.

        @return: Deferred firing with a list of (UID, flags) pairs, ascending
            by UID.
        """

    def get_records(mailbox_id, uids):
        """
        @return: Deferred firing with the list of L{MessageRecord} of those
            of ``uids`` that still exist, ascending by UID.
        """

    def get_messages(mailbox_id, uids):
        """
        Records and structures together, in one look-up (FETCH of
        INTERNALDATE or RFC822.SIZE with ENVELOPE or BODYSTRUCTURE).

        @return: Deferred firing with a list of (L{MessageRecord},
            L{MessageStructure}) pairs for those of ``uids`` that still exist,
            ascending by UID.
        """

    def get_structures(mailbox_id, uids):
        """
        @return: Deferred firing with a dict UID -> L{MessageStructure} for
            those of ``uids`` that still exist.
        """

    def fetch_rows(mailbox_id, uids, columns):
        """
        What FETCH answers from the index alone, as plain tuples, read
        without building records or structures (a client lists a mailbox
        with these).

        @param columns: names from L{FETCH_COLUMNS}, each at most once.
        @return: Deferred firing with a list of ``(uid, *values)``, a value
            for each of ``columns`` in their order, for those of ``uids``
            that still exist, ascending by UID.
        """

    def count_messages(mailbox_id, first_uid, last_uid):
        """
        @return: Deferred firing with how many messages of the mailbox
            have a UID from ``first_uid`` to ``last_uid``, both included
            (0 for a mailbox that is gone).
        """

    def open_message(mailbox_id, uid):
        """
        @return: Deferred firing with a binary file of the stored message
            (CRLF line endings, size as in the record); the caller closes it.
            Fails with L{MessageExpunged}.
        """

    def open_message_now(mailbox_id, uid):
        """
        L{open_message} where it needs no wait: the file when the store has
        the body at hand (its own disk, a local cache), else None, and the
        caller asks L{open_message}.  For a reader that sends most messages
        without a Deferred (POP3 RETR).

        @raise MessageExpunged: the message is gone.
        """

    def store_flags(mailbox_id, uids, flags, mode):
        """
        Change flags.  ``mode`` is ``"set"``, ``"add"`` or ``"remove"``.
        Only messages whose flags really change get a new modseq.

        @return: Deferred firing with the list of L{MessageRecord} that
            changed, ascending by UID.
        """

    def expunge(mailbox_id, uids):
        """
        Remove the messages.  UIDs that do not exist are ignored.

        @return: Deferred firing with the sorted list of UIDs removed.
        """

    def copy(mailbox_id, uids, dest_mailbox_id):
        """
        Copy messages (with flags and INTERNALDATE) to another mailbox.

        @return: Deferred firing with a list of (source UID, new UID) pairs,
            ascending by source UID.
        """

    def move(mailbox_id, uids, dest_mailbox_id):
        """
        Copy then expunge, as one step (RFC 6851).

        @return: Deferred firing with a list of (source UID, new UID) pairs.
        """

    def changes_since(mailbox_id, modseq):
        """
        @return: Deferred firing with a L{ChangeSet} of what happened in the
            mailbox after ``modseq``.
        """

    def claim_recent(mailbox_id):
        """
        Take the \\Recent messages of the mailbox for one session: messages
        delivered since the last claim.  RFC 3501 2.3.2: only one session sees
        a message as recent.

        @return: Deferred firing with a frozenset of UIDs.
        """

    def count_recent(mailbox_id):
        """
        How many messages no session has claimed as \\Recent yet, without
        claiming them (STATUS RECENT of a mailbox not selected).

        @return: Deferred firing with an int; fails with L{NoSuchMailbox}.
        """

    def lock_maildrop(user, device=None):
        """
        Hold the user's POP3 maildrop, or the view of it of ``device``
        (gateway/pop3/devices.py), for one session against every other
        session on this store, in any process or node that shares it (RFC
        1939 8).  Each device's view is a maildrop of its own, and the
        user's plain login another.  A holder that dies releases it.

        @return: Deferred firing with a no-argument callable that releases
            it (calling it again does nothing), or with None when another
            session holds it.  The callable returns None once the maildrop
            is free for every session, or a Deferred that fires then (never
            failing): a client that QUITs on one node and logs in on another
            the moment it reads the answer must get in.
        """

    def store_flags_unchanged_since(mailbox_id, uids, flags, mode, unchangedsince):
        """
        L{store_flags} for the messages whose modseq is at most
        ``unchangedsince``; the others are left alone (RFC 7162 3.1.3).  The
        test and the change are one atomic step.

        @return: Deferred firing with (the L{MessageRecord}s that changed,
            ascending by UID; the UIDs that failed the test, ascending).
        """

    def quota_usage(user):
        """
        What the user's mailboxes hold together, as of the last commit:
        kept by the store in the transaction of each change that adds or
        removes a message (delivery, APPEND, COPY, MOVE, expunge, a deleted
        mailbox), so it is never recounted on the way.

        @return: Deferred firing with a L{QuotaUsage}; zero for a user
            without mail.
        """

    # POP3 views per device (gateway/pop3/devices.py): which of a mailbox's
    # messages each device has deleted.  Like the flags, a backend whose
    # index is rebuilt from the message files starts them afresh.

    def open_device(mailbox_id, device, now, max_devices, forget_before):
        """
        A POP3 device's view of the mailbox opens: first every device whose
        last login was before ``forget_before`` is forgotten, its marks with
        it (``device`` too, which then comes back as new); then ``device``
        is registered, or its login noted, at ``now`` (seconds since the
        epoch).  One step: nothing of it is done when it fails.

        @return: Deferred firing with the frozenset of UIDs ``device`` has
            deleted; fails with L{TooManyDevices} when ``device`` is new and
            the mailbox has ``max_devices`` already, or L{NoSuchMailbox}.
        """

    def delete_for_device(mailbox_id, device, uids):
        """
        Mark ``uids`` deleted by ``device`` (registered by L{open_device}),
        durably: a POP3 QUIT was answered on it.  Marks of messages no longer
        in the mailbox go in the same step.

        @return: Deferred firing with the ascending list of the mailbox's
            UIDs that every device registered on it has deleted.
        """

    def forget_device_deletions(mailbox_id, uids):
        """
        Drop every device's mark on ``uids``, once the delete policy has
        taken them.

        @return: Deferred firing with None.
        """


class UidNotAvailable(StoreError):
    """The UID asked for is below the mailbox's UIDNEXT (UIDs never go back)."""


class IImportableStore(Interface):
    """
    What migration needs beyond L{IMailStore}: keeping the UIDVALIDITY and
    the UIDs a mailbox had on the server it comes from, so that POP3 UIDLs
    and IMAP client caches stay valid across the move.
    """

    def create_mailbox_with_uidvalidity(user, name, uidvalidity):
        """
        Create the mailbox with the given UIDVALIDITY, or give that
        UIDVALIDITY to an existing mailbox that has never held a message
        (UIDNEXT still 1), such as the INBOX ``ensure_user`` made.  The
        store never issues that UIDVALIDITY afresh afterwards.

        @return: Deferred firing with the L{MailboxInfo}; fails with
            L{MailboxExists} when the mailbox has held messages, or
            L{InvalidMailboxName}.
        """

    def append_with_uid(mailbox_id, uid, source, flags, internaldate):
        """
        As L{IMailStore.append}, with the same durability, but the message
        gets ``uid``, which must be at least the mailbox's UIDNEXT; UIDNEXT
        becomes ``uid + 1``.

        @return: Deferred firing with the L{MessageRecord}; fails with
            L{UidNotAvailable}, L{NoSuchMailbox} or L{TemporaryFailure}.
        """

    def raise_uidnext(mailbox_id, uidnext):
        """
        Make UIDNEXT at least ``uidnext`` (a source server's next UID, or a
        repair), persisted so that an index rebuild keeps it.

        @return: Deferred firing with the mailbox's UIDNEXT afterwards.
        """


class IGroupCommitStore(Interface):
    """
    A store that can index several deliveries under one commit, so that an
    LMTP burst pays one index fsync for many messages.
    """

    def append_many(deliveries):
        """
        Several L{IMailStore.append}s, each with the same durability, under
        one commit: ``deliveries`` is a list of (mailbox, source), where
        ``mailbox`` is a mailbox id or an L{Inbox} (the user's INBOX, found
        in that commit's transaction).  A source object named by several
        deliveries (one message for several recipients) is read, spooled
        and parsed once, and every mailbox gets the same body.

        @return: Deferred firing with one item per delivery, in order: its
            L{MessageRecord}, or the exception that refused it
            (L{TemporaryFailure}, L{NoSuchMailbox}: also a user without an
            INBOX); one refused delivery does not stop the others.
        """


class IStoreMaintenance(Interface):
    """
    What ``gateway check`` asks of a backend: its own consistency, read
    without changing anything, and the repairs that cannot lose or invent
    mail.
    """

    def check(repair):
        """
        Look for inconsistencies; with ``repair``, do the safe repairs, each
        through the store so that live sessions hear of it, then look again.

        @return: Deferred firing with a L{CheckReport}; fails with L{NoStore}
            when there is no store to check.
        """


class IStoreDump(Interface):
    """
    What copying a whole store elsewhere (``gateway migrate``) reads beyond
    L{IMailStore}: who has mail, and the state of each mailbox that its
    messages and L{MailboxInfo} do not show.
    """

    def list_users():
        """
        @return: Deferred firing with the sorted names of every user with a
            mailbox or a subscription.
        """

    def mailbox_state(mailbox_id):
        """
        @return: Deferred firing with the mailbox's L{MailboxState}; fails
            with L{NoSuchMailbox}.
        """

    def list_devices(mailbox_id):
        """
        @return: Deferred firing with the mailbox's POP3 devices, a tuple of
            L{DeviceState} sorted by name.
        """


class IStoreLoad(Interface):
    """
    A store another is copied into, keeping every identity a client holds:
    UIDVALIDITY, UIDs, modseqs, flags, INTERNALDATE, the expunged history,
    \\Recent, subscriptions and POP3 device views (``gateway migrate``).
    Copying again brings a copy up to date with its source; each step is
    one commit, so an interrupted copy is finished by running it again.
    """

    def load_mailbox(user, info, state):
        """
        Make ``user``'s mailbox ``info.name`` ready to take the copy of the
        source mailbox ``info`` (a L{MailboxInfo}; ``state`` its
        L{MailboxState}): created with its UIDVALIDITY and special use when
        absent, or given that UIDVALIDITY when it never held a message.

        @return: Deferred firing with the L{MailboxInfo} here; fails with
            L{CopyConflict} when the mailbox here has another UIDVALIDITY or
            a HIGHESTMODSEQ above the source's (it changed after a copy).
        """

    def load_messages(mailbox_id, messages):
        """
        Add messages with their UID, flags, INTERNALDATE and modseq, in one
        commit, every body stored first: ``messages`` is a list of
        (L{MessageRecord}, L{MessageStructure}, body as bytes or a binary
        file).  UIDNEXT and HIGHESTMODSEQ rise to cover them.

        @return: Deferred firing with None; fails with L{CopyConflict} when
            one of the UIDs is here already.
        """

    def load_flags(mailbox_id, records):
        """
        Give the messages of ``records`` (L{MessageRecord}s) their flags and
        modseq, in one commit.

        @return: Deferred firing with None.
        """

    def finish_mailbox(mailbox_id, info, state, uids, devices):
        """
        End a mailbox's copy in one commit: the messages not in ``uids``
        (the source's) go without a trace of their own (the copied expunged
        history says they went); UIDNEXT, HIGHESTMODSEQ and the rest of
        ``info`` and ``state`` become the source's (never below a message
        here); the POP3 devices become ``devices`` (L{DeviceState}s).

        @return: Deferred firing with the number of messages removed.
        """

    def set_subscriptions(user, names):
        """
        Make ``user``'s subscriptions exactly ``names``.

        @return: Deferred firing with None.
        """

