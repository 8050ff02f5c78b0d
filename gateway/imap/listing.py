"""
LIST with its extensions and LSUB: LIST-EXTENDED (RFC 5258: selection and
return options, several patterns, \\NonExistent, \\Subscribed, CHILDINFO),
the SPECIAL-USE selection and return options (RFC 6154 5), RETURN (STATUS)
(LIST-STATUS, RFC 5819: the items only; the STATUS responses are the
server's), and LSUB's parents of subscribed names (RFC 3501 6.3.9).

The arguments arrive as ``search_keys.tokenize_search`` tokens (literals
read in, parenthesised lists nested); names are decoded by the caller.
Levels that do not exist but have children are listed so that ``%`` walks
reach them: ``\\Noselect`` for an IMAP4rev1 LIST, ``\\NonExistent`` where
LIST-EXTENDED speaks (RFC 5258 3.5 note: servers that allow mailboxes
without parents).

Pure: no Twisted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs

from gateway.imap.wire import compile_pattern
from gateway.store.model import HIERARCHY_SEPARATOR
from gateway.store.names import canonical_name

SELECTION_OPTIONS = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
RETURN_OPTIONS = ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS")


class ListSyntaxError(ValueError):
    """LIST arguments that are not RFC 5258's (tagged BAD)."""


@attrs.frozen
class ListCommand:
    """
    One LIST, its mailbox names still as the client wrote them (bytes):
    ``extended`` when any RFC 5258 syntax was used (options or a pattern
    list), so that its answers may carry \\NonExistent and extended data.
    """

    reference: bytes
    patterns: tuple[bytes, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()
    extended: bool = False


def _word(token) -> str:
    if not isinstance(token, bytes) or not token.isascii():
        raise ListSyntaxError("expected an option name")
    return token.decode("ascii").upper()


def parse_list(tokens: list) -> ListCommand:
    """
    ``list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat
    [SP list-return-opts]`` (RFC 5258 6) from its tokens.
    """
    tokens = list(tokens)
    selection: set[str] = set()
    extended = False
    if tokens and isinstance(tokens[0], list):
        extended = True
        selection = {_word(token) for token in tokens.pop(0)}
        unknown = selection - set(SELECTION_OPTIONS)
        if unknown:
            raise ListSyntaxError(f"unknown selection option {sorted(unknown)[0]}")
        if selection and selection <= {"RECURSIVEMATCH", "REMOTE"} and "RECURSIVEMATCH" in selection:
            # RFC 5258 3.1: it needs another selection option.
            raise ListSyntaxError("RECURSIVEMATCH alone")
    if len(tokens) < 2 or not isinstance(tokens[0], bytes):
        raise ListSyntaxError("expected a reference name and a mailbox pattern")
    reference, patterns = tokens[0], tokens[1]
    if isinstance(patterns, list):
        extended = True
        if not patterns or not all(isinstance(pattern, bytes) for pattern in patterns):
            raise ListSyntaxError("expected a list of mailbox patterns")
        patterns = tuple(patterns)
    else:
        patterns = (patterns,)
    rest = tokens[2:]
    returns: set[str] = set()
    status_items: tuple[str, ...] = ()
    if rest:
        if len(rest) != 2 or _word(rest[0]) != "RETURN" or not isinstance(rest[1], list):
            raise ListSyntaxError("expected RETURN (options) after the patterns")
        extended = True
        options = rest[1]
        index = 0
        while index < len(options):
            name = _word(options[index])
            if name not in RETURN_OPTIONS:
                raise ListSyntaxError(f"unknown return option {name}")
            if name == "STATUS":
                index += 1
                if index >= len(options) or not isinstance(options[index], list) or not options[index]:
                    raise ListSyntaxError("STATUS needs a list of status items")
                status_items = tuple(_word(item) for item in options[index])
            returns.add(name)
            index += 1
    if "SUBSCRIBED" in selection:
        # RFC 5258 3.1: the selection option implies the return option.
        returns.add("SUBSCRIBED")
    return ListCommand(reference, patterns, frozenset(selection), frozenset(returns), status_items, extended)


@attrs.frozen
class ListEntry:
    """One LIST answer: a name, its attributes, and CHILDINFO's criteria (RFC 5258 3.5)."""

    name: str
    attributes: tuple[str, ...]
    childinfo: tuple[str, ...] = ()

    @property
    def selectable(self) -> bool:
        return "\\NonExistent" not in self.attributes and "\\Noselect" not in self.attributes


def _ancestors(name: str) -> Iterable[str]:
    levels = name.split(HIERARCHY_SEPARATOR)
    for depth in range(1, len(levels)):
        yield HIERARCHY_SEPARATOR.join(levels[:depth])


def _order(name: str) -> tuple[bool, str]:
    return (name != "INBOX", name)


def list_entries(existing: Mapping[str, str | None], subscribed: Iterable[str], reference: str,
                 patterns: Iterable[str], selection: frozenset[str] = frozenset(),
                 returns: frozenset[str] = frozenset({"CHILDREN"}), extended: bool = False) -> list[ListEntry]:
    """
    The answers to a LIST: ``existing`` maps each mailbox to its special
    use (or None), ``subscribed`` names the subscriptions, ``patterns`` are
    matched after ``reference`` (any of them, RFC 5258 3).
    """
    matchers = [compile_pattern(reference, pattern) for pattern in patterns]

    def matches(name: str) -> bool:
        return any(matcher.fullmatch(name) for matcher in matchers)

    subscribed = {canonical_name(name) for name in subscribed}
    by_subscription = "SUBSCRIBED" in selection
    by_use = "SPECIAL-USE" in selection
    criteria = [name for name in ("SUBSCRIBED", "SPECIAL-USE") if name in selection]

    def meets(name: str) -> bool:
        if not criteria:
            return name in existing
        return ((not by_subscription or name in subscribed)
                and (not by_use or existing.get(name) is not None))

    parents = {ancestor for name in existing for ancestor in _ancestors(name)}
    universe = set(existing) | parents | (subscribed if by_subscription else set())
    # RFC 5258 3.5: CHILDINFO for a name with a descendant that meets the
    # criteria and is not itself answered (the redundant ones left out).
    childinfo: set[str] = set()
    if "RECURSIVEMATCH" in selection:
        for name in list(universe) + list(subscribed):
            if meets(name) and not matches(name):
                for ancestor in _ancestors(name):
                    childinfo.add(ancestor)
                    universe.add(ancestor)
    entries = []
    for name in sorted(universe, key=_order):
        if not matches(name):
            continue
        selected = meets(name)
        # Without criteria, levels above existing mailboxes are listed too.
        placeholder = not criteria and name in parents
        if not (selected or name in childinfo or placeholder):
            continue
        attributes = []
        if name not in existing and not extended:
            attributes.append("\\Noselect")
        if "CHILDREN" in returns:
            attributes.append("\\HasChildren" if name in parents else "\\HasNoChildren")
        if "SUBSCRIBED" in returns and name in subscribed:
            attributes.append("\\Subscribed")
        if name not in existing and extended:
            attributes.append("\\NonExistent")
        if existing.get(name):
            attributes.append(existing[name])
        entries.append(ListEntry(name, tuple(attributes), tuple(criteria) if name in childinfo else ()))
    return entries


def lsub_entries(existing: Mapping[str, str | None], subscribed: Iterable[str], reference: str,
                 pattern: str) -> list[ListEntry]:
    """
    LSUB (RFC 3501 6.3.9): the subscribed names that match, and a level
    above a subscribed name that a ``%`` stops at, flagged \\Noselect
    ("foo" for a subscribed "foo/bar" and the pattern "%").  A subscribed
    name that does not exist is \\Noselect too.
    """
    matcher = compile_pattern(reference, pattern)
    subscribed = {canonical_name(name) for name in subscribed}
    found: dict[str, tuple[str, ...]] = {}
    for name in subscribed:
        if matcher.fullmatch(name):
            found[name] = () if name in existing else ("\\Noselect",)
            continue
        for ancestor in _ancestors(name):
            if ancestor not in subscribed and matcher.fullmatch(ancestor):
                found[ancestor] = ("\\Noselect",)
    return [ListEntry(name, found[name]) for name in sorted(found, key=_order)]


def format_entry(command: bytes, entry: ListEntry, encode: Callable[[str], bytes]) -> bytes:
    """``LIST (attributes) "/" name [extended data]``, without the leading ``* ``."""
    line = b'%s (%s) "%s" %s' % (
        command, " ".join(entry.attributes).encode("ascii"), HIERARCHY_SEPARATOR.encode("ascii"), encode(entry.name),
    )
    if entry.childinfo:
        line += b' ("CHILDINFO" (%s))' % b" ".join(b'"%s"' % item.encode("ascii") for item in entry.childinfo)
    return line
