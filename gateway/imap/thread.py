"""
THREAD (RFC 5256 3): the ORDEREDSUBJECT and REFERENCES algorithms, and the
THREAD response.

Messages come in mailbox order; that order breaks ties between equal sent
dates (RFC 5256 2.2).  No step recurses: a hostile mailbox can thread
ten thousand messages deep, and Python's stack cannot.  ``thread_steps``
works in bounded steps, so that a big mailbox is threaded a slice at a
time (``gateway.imap.slices``).

Pure: no Twisted.
"""

from __future__ import annotations

import datetime
from collections.abc import Generator, Iterable, Iterator, Sequence

import attrs

from gateway.mail.fields import header_values
from gateway.mail.msgid import first_message_id, message_ids
from gateway.mail.subject import base_subject
from gateway.imap.sort import casemap, sent_date

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
# Messages or nodes handled between two steps of ``thread_steps``.
STEP = 500

Steps = Generator[None, None, list["Node"]]


@attrs.frozen
class ThreadMessage:
    """
    What threading reads of one message: ``number`` (sequence number or
    UID, as answered), its sent date (UTC seconds), base subject (casemapped)
    and whether its subject marks a reply or forward, its Message-ID and
    the references to its ancestors, oldest first.
    """

    number: int
    sent: float
    subject: str
    reply: bool = False
    message_id: str | None = None
    references: tuple[str, ...] = ()


def thread_message(number: int, header: bytes, internaldate: datetime.datetime) -> ThreadMessage:
    """A message's threading values from its stored header (RFC 5256 3)."""
    subjects = header_values(header, "subject")
    subject = base_subject(subjects[0] if subjects else None)
    references: list[str] = []
    for value in header_values(header, "references")[:1]:
        references = message_ids(value)
    if not references:
        # RFC 5256: without usable References, the first ID of In-Reply-To.
        replied = first_message_id(next(iter(header_values(header, "in-reply-to")), None))
        references = [replied] if replied is not None else []
    return ThreadMessage(
        number=number,
        sent=sent_date(header, internaldate),
        subject=casemap(subject.text),
        reply=subject.reply,
        message_id=first_message_id(next(iter(header_values(header, "message-id")), None)),
        references=tuple(references),
    )


class Node:
    """A message in a thread tree, or a dummy standing for one that is not there."""

    __slots__ = ("message", "order", "parent", "children")

    def __init__(self, message: ThreadMessage | None = None, order: int = 0):
        self.message = message
        self.order = order
        self.parent: Node | None = None
        self.children: list[Node] = []

    @property
    def dummy(self) -> bool:
        return self.message is None

    def sort_key(self) -> tuple[float, int]:
        # RFC 5256 3 step 6: a dummy sorts as its first child.
        node = self
        while node.message is None and node.children:
            node = node.children[0]
        return (node.message.sent, node.order) if node.message is not None else (0.0, node.order)

    def subject(self) -> str:
        node = self if self.message is not None or not self.children else self.children[0]
        return node.message.subject if node.message is not None else ""


# -- ORDEREDSUBJECT -------------------------------------------------------------


def ordered_subject(messages: Sequence[ThreadMessage]) -> list[Node]:
    """
    RFC 5256 3: sorted by base subject then sent date, split into one
    thread per subject, the first message at the root and the others its
    children; threads ordered by their first message's sent date.
    """
    return _run(_ordered_subject(messages))


def _ordered_subject(messages: Sequence[ThreadMessage]) -> Steps:
    ordered = sorted(range(len(messages)), key=lambda i: (messages[i].subject, messages[i].sent, i))
    yield
    roots: list[Node] = []
    for count, index in enumerate(ordered, 1):
        if count % STEP == 0:
            yield
        node = Node(messages[index], index)
        if roots and roots[-1].message.subject == node.message.subject:
            _link(roots[-1], node)
        else:
            roots.append(node)
    roots.sort(key=Node.sort_key)
    return roots


# -- REFERENCES -----------------------------------------------------------------


def references(messages: Sequence[ThreadMessage]) -> list[Node]:
    """RFC 5256 3, REFERENCES, steps (1) to (6)."""
    return _run(_references(messages))


def _references(messages: Sequence[ThreadMessage]) -> Steps:
    by_id: dict[object, Node] = {}

    def node_for(message_id: str) -> Node:
        node = by_id.get(message_id)
        if node is None:
            node = by_id[message_id] = Node()
        return node

    nodes = []
    for order, message in enumerate(messages):
        if order % STEP == STEP - 1:
            yield
        # (1)(A): an ID used already by an earlier message, or none, is
        # replaced by one of the message's own.
        key: object = message.message_id
        node = by_id.get(key) if key is not None else None
        if node is None or not node.dummy:
            key = object() if node is not None or key is None else key
            node = by_id[key] = Node()
        node.message, node.order = message, order
        nodes.append(node)
        chain = [node_for(reference) for reference in message.references]
        for parent, child in zip(chain, chain[1:]):
            if child.parent is None and not _would_loop(parent, child):
                _link(parent, child)
        # (1)(B): the last reference is the parent, replacing any other.
        if node.parent is not None:
            _unlink(node)
        if chain and not _would_loop(chain[-1], node):
            _link(chain[-1], node)
    # (2) every node without a parent is under the root.
    roots = [node for node in by_id.values() if node.parent is None]
    yield
    roots = yield from _prune(roots)
    # (4) the root's children by sent date, a dummy by its first child's.
    for node in roots:
        if node.dummy:
            node.children.sort(key=Node.sort_key)
    roots.sort(key=Node.sort_key)
    yield
    roots = yield from _merge_subjects(roots)
    yield from _sort_siblings(roots)
    return roots


def _link(parent: Node, child: Node) -> None:
    child.parent = parent
    parent.children.append(child)


def _unlink(child: Node) -> None:
    child.parent.children.remove(child)
    child.parent = None


def _would_loop(parent: Node, child: Node) -> bool:
    """Whether ``parent`` is ``child`` or one of its descendants."""
    if not child.children:
        # Nothing below it: no walk up a chain that may be thousands deep.
        return parent is child
    node: Node | None = parent
    while node is not None:
        if node is child:
            return True
        node = node.parent
    return False


def _walk(roots: Iterable[Node]) -> Iterator[Node]:
    """Every node below ``roots``, parents before their children."""
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def _prune(roots: list[Node]) -> Steps:
    """
    (3) Dummies go: one without children is deleted, one with children
    gives them its place, except at the root where a dummy keeps two or
    more children together.
    """
    # Children before parents, so that each dummy sees its final children.
    for count, node in enumerate(reversed(list(_walk(roots))), 1):
        if count % STEP == 0:
            yield
        kept = []
        for child in node.children:
            if child.dummy:
                for grandchild in child.children:
                    grandchild.parent = node
                kept.extend(child.children)
            else:
                kept.append(child)
        node.children = kept
    top = []
    for node in roots:
        if node.dummy and len(node.children) < 2:
            for child in node.children:
                child.parent = None
            top.extend(node.children)
        else:
            top.append(node)
    return top


def _merge_subjects(roots: list[Node]) -> Steps:
    """(5) Threads under the root with the same base subject gathered."""
    table: dict[str, Node] = {}
    for count, node in enumerate(roots, 1):
        if count % STEP == 0:
            yield
        subject = node.subject()
        if not subject:
            continue
        held = table.get(subject)
        if held is None:
            table[subject] = node
        elif not held.dummy and (node.dummy or (held.message.reply and not node.message.reply)):
            table[subject] = node
    merged = []
    # Where each thread kept under the root is in ``merged``, by identity.
    position: dict[int, int] = {}
    for count, node in enumerate(roots, 1):
        if count % STEP == 0:
            yield
        subject = node.subject()
        held = table.get(subject) if subject else None
        if held is None or held is node:
            position[id(node)] = len(merged)
            merged.append(node)
            continue
        if held.dummy and node.dummy:
            for child in node.children:
                child.parent = held
            held.children.extend(node.children)
        elif held.dummy or (node.message.reply and not held.message.reply):
            _link(held, node)
        else:
            # The dummy takes the held message's place under the root: held
            # is the first non-reply of its subject, so it came before.
            dummy = Node(order=held.order)
            index = position.pop(id(held))
            merged[index] = dummy
            position[id(dummy)] = index
            _link(dummy, held)
            _link(dummy, node)
            table[subject] = dummy
    return merged


def _sort_siblings(roots: list[Node]) -> Generator[None, None, None]:
    """(6) Every set of siblings by sent date, the youngest generation first."""
    for count, node in enumerate(reversed(list(_walk(roots))), 1):
        if count % STEP == 0:
            yield
        node.children.sort(key=Node.sort_key)
    roots.sort(key=Node.sort_key)


# -- the response ---------------------------------------------------------------


def format_threads(roots: Iterable[Node]) -> bytes:
    """
    The untagged THREAD response, without the leading ``* `` (RFC 5256 4):
    ``(3 6 (4 23)(44 7 96))``; a dummy at the root lists its children as
    nested threads, ``((3)(5))``.
    """
    out = [b"THREAD"]
    first = True
    for root in roots:
        if first:
            out.append(b" ")
            first = False
        out.append(b"(")
        out.extend(_members(root))
        out.append(b")")
    return b"".join(out)


def _members(root: Node) -> Iterator[bytes]:
    # Items on the stack: a node to write, or bytes to write as they are.
    stack: list[Node | bytes] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            yield item
            continue
        children = item.children
        if item.dummy:
            pending: list[Node | bytes] = []
            for child in children:
                pending += [b"(", child, b")"]
            stack.extend(reversed(pending))
            continue
        yield b"%d" % item.message.number
        if len(children) == 1:
            stack.extend((children[0], b" "))
        elif children:
            pending = [b" "]
            for child in children:
                pending += [b"(", child, b")"]
            stack.extend(reversed(pending))


def thread(algorithm: str, messages: Sequence[ThreadMessage]) -> list[Node]:
    """The threads of ``messages`` by ``algorithm`` (one of ALGORITHMS)."""
    return _run(thread_steps(algorithm, messages))


def thread_steps(algorithm: str, messages: Sequence[ThreadMessage]) -> Steps:
    """``thread`` as bounded steps (``gateway.imap.slices`` runs them); its result is the roots."""
    if algorithm == "ORDEREDSUBJECT":
        return (yield from _ordered_subject(messages))
    if algorithm == "REFERENCES":
        return (yield from _references(messages))
    raise ValueError(algorithm)


def _run(steps: Steps) -> list[Node]:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
