"""
NOTIFY (RFC 5465): the command parsed and checked, and what a session
watching events should tell its client about a mailbox.

Supported events: MessageNew (with FETCH attributes for the selected
mailbox), MessageExpunge, FlagChange and MailboxName.  Mailbox filters:
SELECTED, SELECTED-DELAYED, INBOXES (which here is PERSONAL, as RFC 5465
6.3 allows: every mailbox may be delivered to with a +detail), PERSONAL,
SUBSCRIBED, SUBTREE and MAILBOXES.

The arguments are tokenized here (``tokenize``); mailbox names in them are
decoded by the caller (``decode``).

Pure: no Twisted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import attrs

from gateway.store.model import HIERARCHY_SEPARATOR

MESSAGE_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange")
SUPPORTED = (*MESSAGE_EVENTS, "MailboxName")
# Events of RFC 5465 that are refused with NO [BADEVENT] rather than BAD.
_KNOWN = {name.upper(): name for name in (*SUPPORTED, "AnnotationChange", "SubscriptionChange",
                                          "MailboxMetadataChange", "ServerMetadataChange")}
SELECTED_FILTERS = ("SELECTED", "SELECTED-DELAYED")
OTHER_FILTERS = ("INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES")


class NotifySyntaxError(ValueError):
    """Arguments NOTIFY does not take (tagged BAD)."""


class UnsupportedEvent(ValueError):
    """An event this server does not report (RFC 5465 3.1: NO [BADEVENT (...)])."""

    code = b"[BADEVENT (" + " ".join(SUPPORTED).encode("ascii") + b")]"


@attrs.frozen
class EventGroup:
    """
    One ``(filter events)`` of NOTIFY SET: ``names`` for SUBTREE and
    MAILBOXES (decoded), ``fetch`` the FETCH attributes of MessageNew for
    the selected mailbox as the client wrote them (between the
    parentheses), or None.
    """

    filter: str
    events: frozenset[str]
    names: tuple[str, ...] = ()
    fetch: bytes | None = None


@attrs.frozen
class Notify:
    """A NOTIFY SET (``groups``; none at all for NOTIFY NONE) and its STATUS indicator."""

    groups: tuple[EventGroup, ...] = ()
    status: bool = False

    @property
    def selected(self) -> EventGroup | None:
        return next((group for group in self.groups if group.filter in SELECTED_FILTERS), None)

    def selected_events(self) -> frozenset[str]:
        """RFC 5465 3.1: the message events of the selected mailbox come from SELECTED alone."""
        group = self.selected
        return group.events if group is not None else frozenset()

    def events_for(self, name: str, subscribed: Iterable[str] = ()) -> frozenset[str]:
        """The events watched on the mailbox ``name`` when it is not the selected one."""
        found: set[str] = set()
        subscribed = set(subscribed)
        for group in self.groups:
            if group.filter in SELECTED_FILTERS:
                continue
            if (group.filter in ("INBOXES", "PERSONAL")
                    or (group.filter == "SUBSCRIBED" and name in subscribed)
                    or (group.filter == "MAILBOXES" and name in group.names)
                    or (group.filter == "SUBTREE" and any(
                        name == top or name.startswith(top + HIERARCHY_SEPARATOR) for top in group.names))):
                found |= group.events
        return frozenset(found)

    def watches_mailbox_names(self) -> bool:
        return any("MailboxName" in group.events for group in self.groups)


class Group(list):
    """A parenthesised list of tokens, with ``raw``: the bytes between its parentheses."""

    raw = b""


_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_LITERAL = re.compile(rb"\{([0-9]{1,10})\+?\}\r\n")


def tokenize(line: bytes, max_depth: int = 32) -> list:
    """
    NOTIFY's arguments as tokens: ``bytes`` for atoms, quoted strings and
    literals (inline as ``{n}\\r\\n`` and n octets), a L{Group} per
    parenthesised list.  An atom may hold a bracketed part with spaces and
    parentheses, as FETCH's ``BODY.PEEK[HEADER.FIELDS (From)]`` does.
    """
    stack: list[tuple[Group, int]] = [(Group(), 0)]
    position = 0
    while position < len(line):
        char = line[position:position + 1]
        if char == b" ":
            position += 1
        elif char == b"(":
            if len(stack) > max_depth:
                raise NotifySyntaxError(f"nested deeper than {max_depth}")
            group = Group()
            stack[-1][0].append(group)
            stack.append((group, position + 1))
            position += 1
        elif char == b")":
            if len(stack) == 1:
                raise NotifySyntaxError("unbalanced ')'")
            group, start = stack.pop()
            group.raw = line[start:position]
            position += 1
        elif char == b'"':
            match = _QUOTED.match(line, position)
            if match is None:
                raise NotifySyntaxError("malformed quoted string")
            stack[-1][0].append(re.sub(rb'\\(["\\])', rb"\1", match[1]))
            position = match.end()
        elif char == b"{":
            match = _LITERAL.match(line, position)
            if match is None or match.end() + int(match[1]) > len(line):
                raise NotifySyntaxError("malformed literal")
            position = match.end() + int(match[1])
            stack[-1][0].append(line[match.end():position])
        else:
            start = position
            while position < len(line) and line[position:position + 1] not in b" ()":
                if line[position:position + 1] == b"[":
                    close = line.find(b"]", position)
                    if close < 0:
                        raise NotifySyntaxError("unbalanced '['")
                    position = close
                position += 1
            stack[-1][0].append(line[start:position])
    if len(stack) != 1:
        raise NotifySyntaxError("unbalanced '('")
    return stack[0][0]


def _atom(token, what: str) -> str:
    if not isinstance(token, bytes) or not token.isascii():
        raise NotifySyntaxError(f"expected {what}")
    return token.decode("ascii")


def parse_notify(tokens: list, decode: Callable[[bytes], str]) -> Notify:
    """
    ``notify = "NOTIFY" SP (notify-set / notify-none)`` (RFC 5465 8) from
    the tokens after NOTIFY.  ``decode`` turns a wire mailbox name into a
    store name; a name it refuses (ValueError) is ignored, as RFC 5465 3.1
    has a name that refers to no mailbox ignored.
    """
    if not tokens:
        raise NotifySyntaxError("NOTIFY needs SET or NONE")
    verb = _atom(tokens[0], "SET or NONE").upper()
    if verb == "NONE":
        if len(tokens) != 1:
            raise NotifySyntaxError("nothing follows NOTIFY NONE")
        return Notify()
    if verb != "SET":
        raise NotifySyntaxError("NOTIFY needs SET or NONE")
    rest = tokens[1:]
    status = False
    if rest and isinstance(rest[0], bytes) and rest[0].upper() == b"STATUS":
        status = True
        rest = rest[1:]
    if not rest:
        raise NotifySyntaxError("NOTIFY SET needs at least one event group")
    groups = [_event_group(group, decode) for group in rest]
    if sum(group.filter in SELECTED_FILTERS for group in groups) > 1:
        raise NotifySyntaxError("SELECTED or SELECTED-DELAYED, once")
    return Notify(tuple(groups), status)


def _event_group(token, decode: Callable[[bytes], str]) -> EventGroup:
    if not isinstance(token, list) or len(token) < 2:
        raise NotifySyntaxError("an event group is (filter events)")
    filter_name = _atom(token[0], "a mailbox filter").upper()
    names: list[str] = []
    rest = token[1:]
    if filter_name in ("SUBTREE", "MAILBOXES"):
        given = rest[0]
        for name in given if isinstance(given, list) else [given]:
            if not isinstance(name, bytes):
                raise NotifySyntaxError("expected a mailbox name")
            try:
                names.append(decode(name))
            except ValueError:
                continue
        rest = rest[1:]
    elif filter_name not in (*SELECTED_FILTERS, *OTHER_FILTERS):
        raise NotifySyntaxError("unknown mailbox filter")
    if not rest:
        raise NotifySyntaxError("an event group ends with its events")
    # RFC 5465 8 has the events in a list; its own example (3.1) leaves
    # the parentheses out, and so may clients that followed it.
    listed = len(rest) == 1 and (isinstance(rest[0], Group) or rest[0].upper() == b"NONE")
    events, fetch = _events(rest[0] if listed else Group(rest))
    selected = filter_name in SELECTED_FILTERS
    if selected and events - set(MESSAGE_EVENTS):
        raise NotifySyntaxError("SELECTED takes message events only")
    if fetch is not None and not selected:
        raise NotifySyntaxError("FETCH attributes for the selected mailbox only")
    # RFC 5465 5: MessageNew and MessageExpunge together, and FlagChange with them.
    if ("MessageNew" in events) != ("MessageExpunge" in events):
        raise NotifySyntaxError("MessageNew and MessageExpunge go together")
    if "FlagChange" in events and "MessageNew" not in events:
        raise NotifySyntaxError("FlagChange needs MessageNew and MessageExpunge")
    return EventGroup(filter_name, frozenset(events), tuple(names), fetch)


def _events(token) -> tuple[set[str], bytes | None]:
    if isinstance(token, bytes):
        if token.upper() == b"NONE":
            return set(), None
        raise NotifySyntaxError("events are a parenthesised list or NONE")
    if not isinstance(token, list) or not token:
        raise NotifySyntaxError("events are a parenthesised list or NONE")
    events: set[str] = set()
    fetch = None
    index = 0
    while index < len(token):
        name = _atom(token[index], "an event name")
        known = _KNOWN.get(name.upper())
        if known not in SUPPORTED:
            # event-ext = atom: syntax the server does not support.
            raise UnsupportedEvent(name)
        events.add(known)
        index += 1
        if known == "MessageNew" and index < len(token) and isinstance(token[index], Group):
            fetch = token[index].raw
            index += 1
    return events, fetch


def status_items(events: frozenset[str], condstore: bool, qresync: bool) -> dict[str, tuple[str, ...]]:
    """
    RFC 5465 5.1-5.3: the STATUS items that report each kind of change of a
    watched mailbox that is not the selected one: ``"messages"`` (new or
    expunged), ``"flags"``; and ``"initial"``, what NOTIFY SET STATUS sends
    (3.1).  Flag changes without CONDSTORE are told by UNSEEN.
    """
    found: dict[str, tuple[str, ...]] = {}
    if "MessageNew" in events:
        messages = ["MESSAGES", "UIDNEXT"]
        if condstore or qresync:
            messages.append("HIGHESTMODSEQ")
        found["messages"] = tuple(messages)
    if "FlagChange" in events:
        found["flags"] = ("HIGHESTMODSEQ", "UIDVALIDITY") if condstore or qresync else ("UNSEEN",)
    initial: list[str] = []
    if "MessageNew" in events:
        initial += ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
    if "FlagChange" in events and (condstore or qresync):
        initial += [item for item in ("UIDVALIDITY", "HIGHESTMODSEQ") if item not in initial]
    if initial:
        found["initial"] = tuple(initial)
    return found


def changed_status(items: dict[str, tuple[str, ...]], before: Mapping[str, int],
                   after: Mapping[str, int]) -> tuple[str, ...]:
    """
    The STATUS items to send after a change of a watched mailbox, given its
    values as last told (``before``) and now (``after``), each holding
    every item of ``items``; () when nothing the client watches changed.
    """
    sent: list[str] = []
    messages = items.get("messages", ())
    if messages and any(before.get(item) != after.get(item) for item in ("MESSAGES", "UIDNEXT")):
        sent += messages
    flags = items.get("flags", ())
    if flags and any(before.get(item) != after.get(item) for item in flags):
        sent += [item for item in flags if item not in sent]
    return tuple(sent)
