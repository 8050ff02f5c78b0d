"""
A raw-socket IMAP client for the consistency and stress tests: several
commands in flight, every response read whole (literals checked against
their counts), untagged responses handed to a subclass's model.
"""

from __future__ import annotations

import re
import socket

_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class RawImap:
    tag_prefix = b"t"

    def __init__(self, port: int, user: str, password: bytes = b"pw"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.user = user
        self.counter = 0
        self.pending: list[tuple[bytes, bytes]] = []
        assert self.read().startswith(b"* OK")
        self.call(b"LOGIN %s %s" % (user.encode(), password))

    def read(self) -> bytes:
        """One response line with its literals, without the final CRLF."""
        line = self.file.readline()
        assert line.endswith(b"\r\n"), line
        whole = line
        while (match := _LITERAL.search(line)):
            data = self.file.read(int(match[1]))
            assert len(data) == int(match[1])
            line = self.file.readline()
            assert line.endswith(b"\r\n"), line
            whole += data + line
        return whole[:-2]

    def send(self, command: bytes, literal: bytes | None = None) -> None:
        self.counter += 1
        tag = self.tag_prefix + b"%d" % self.counter
        data = tag + b" " + command
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.sock.sendall(data + b"\r\n")
        self.pending.append((tag, command))

    def finish(self) -> tuple[bytes, list[bytes]]:
        """Read up to the oldest pending command's tagged response."""
        tag, command = self.pending.pop(0)
        words = command.upper().split()
        by_uid = words[0] == b"UID"
        verb = words[1] if by_uid else words[0]
        untagged = []
        while True:
            line = self.read()
            if line.startswith(b"+ "):
                self.continued(line, verb)
                continue
            if line.startswith(tag + b" "):
                self.tagged(line, words)
                return line, untagged
            assert line.startswith(b"* "), line
            self.take(line, verb, by_uid)
            untagged.append(line)

    def call(self, command: bytes, literal: bytes | None = None) -> tuple[bytes, list[bytes]]:
        self.send(command, literal)
        return self.finish()

    def continued(self, line: bytes, verb: bytes) -> None:
        raise AssertionError(f"unexpected continuation during {verb!r}: {line!r}")

    def tagged(self, line: bytes, words: list[bytes]) -> None:
        assert re.match(rb"\S+ (OK|NO|BAD) ", line), line

    def take(self, line: bytes, verb: bytes, by_uid: bool) -> None:
        """One untagged response, checked against the subclass's model."""
