"""
Raw-socket POP3, IMAP and LMTP clients on asyncio, built to not be the
bottleneck: large reads into one buffer, pipelined commands where the
protocol allows, no per-line object churn beyond what a count needs.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import zlib

READ_SIZE = 256 * 1024
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_FETCH = re.compile(rb"\* \d+ FETCH ")
# A literal's announcement anywhere: quoted strings hold no CRLF, so outside
# literals "{n}" before a CRLF is one.
_LITERAL_MARK = re.compile(rb"\{(\d+)\+?\}\r\n")
# A FETCH response starting on the line after the CRLF.
_FETCH_AFTER_CRLF = re.compile(rb"\r\n\* \d+ FETCH ")


class ProtocolError(Exception):
    """The server answered something other than success; str() quotes it."""


class Connection:
    """A TCP connection with a read buffer we search in place."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        # Bytes as they came off the socket (compressed ones, once compressed).
        self.received = 0
        self._inflate = None
        self._deflate = None

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def _fill(self) -> None:
        chunk = await self.reader.read(READ_SIZE)
        if not chunk:
            raise ProtocolError("connection closed by server")
        self.received += len(chunk)
        if self._inflate is not None:
            chunk = self._inflate.decompress(chunk)
        self.buffer += chunk

    def compress(self) -> None:
        """From now on raw DEFLATE both ways (RFC 4978), each write flushed whole."""
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        self._deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)

    async def read_until(self, terminator: bytes) -> bytes:
        """Everything up to and including ``terminator``."""
        start = 0
        while True:
            found = self.buffer.find(terminator, start)
            if found >= 0:
                end = found + len(terminator)
                data = bytes(self.buffer[:end])
                del self.buffer[:end]
                return data
            start = max(0, len(self.buffer) - len(terminator) + 1)
            await self._fill()

    async def read_line(self) -> bytes:
        return await self.read_until(b"\r\n")

    async def skip_exactly(self, count: int) -> None:
        """Consume ``count`` bytes without keeping them."""
        while len(self.buffer) < count:
            count -= len(self.buffer)
            self.buffer.clear()
            await self._fill()
        del self.buffer[:count]

    def write(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


# -- POP3 -------------------------------------------------------------------


class Pop3:
    def __init__(self, connection: Connection):
        self.connection = connection

    @classmethod
    async def login(cls, host: str, port: int, user: str, password: str, pipelined: bool = True) -> Pop3:
        """Greeting, USER and PASS: pipelined (RFC 2449 PIPELINING allows
        it), or one at a time as most clients send them."""
        connection = await Connection.open(host, port)
        pop3 = cls(connection)
        try:
            await pop3.ok()
            if pipelined:
                connection.write(b"USER %s\r\nPASS %s\r\n" % (user.encode(), password.encode()))
                await pop3.ok()
            else:
                await pop3.command(b"USER %s" % user.encode())
                connection.write(b"PASS %s\r\n" % password.encode())
            await pop3.ok()
        except BaseException:
            await connection.close()
            raise
        return pop3

    async def command(self, line: bytes) -> bytes:
        """One single-line command; its +OK line."""
        self.connection.write(line + b"\r\n")
        return await self.ok()

    async def stat(self) -> tuple[int, int]:
        """STAT: (messages, octets)."""
        _, count, size = (await self.command(b"STAT")).split()[:3]
        return int(count), int(size)

    async def listing(self) -> bytes:
        """LIST: the scan listing, terminator included."""
        self.connection.write(b"LIST\r\n")
        return await self.multiline()

    async def ok(self) -> bytes:
        line = await self.connection.read_line()
        if not line.startswith(b"+OK"):
            raise ProtocolError(f"POP3: {line.decode(errors='replace').strip()}")
        return line

    async def multiline(self) -> bytes:
        await self.ok()
        return await self.connection.read_until(b"\r\n.\r\n")

    async def uidl(self) -> list[tuple[int, bytes]]:
        self.connection.write(b"UIDL\r\n")
        listing = await self.multiline()
        return [(int(number), uid) for number, uid in
                (line.split(b" ", 1) for line in listing.split(b"\r\n")[:-2])]

    async def top(self, number: int, lines: int) -> int:
        """TOP: bytes of the answer, terminator included."""
        self.connection.write(b"TOP %d %d\r\n" % (number, lines))
        return len(await self.multiline())

    async def retr_all(self, numbers: list[int], window: int = 16) -> int:
        """RETR each message with up to ``window`` commands in flight; bytes read."""
        total, sent, received = 0, 0, 0
        while received < len(numbers):
            while sent < len(numbers) and sent - received < window:
                self.connection.write(b"RETR %d\r\n" % numbers[sent])
                sent += 1
            total += len(await self.multiline())
            received += 1
        return total

    async def quit(self) -> None:
        self.connection.write(b"QUIT\r\n")
        try:
            await self.ok()
        finally:
            await self.connection.close()


# -- IMAP -------------------------------------------------------------------


def quoted(text: str) -> bytes:
    return b'"' + text.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class Imap:
    def __init__(self, connection: Connection):
        self.connection = connection
        self.counter = 0

    @classmethod
    async def login(cls, host: str, port: int, user: str, password: str) -> Imap:
        connection = await Connection.open(host, port)
        imap = cls(connection)
        try:
            greeting = await connection.read_line()
            if not greeting.startswith(b"* OK"):
                raise ProtocolError(f"IMAP greeting: {greeting.decode(errors='replace').strip()}")
            await imap.command(b"LOGIN " + quoted(user) + b" " + quoted(password))
        except BaseException:
            await connection.close()
            raise
        return imap

    async def compress(self) -> None:
        """COMPRESS DEFLATE (RFC 4978): the server compresses from the line after its OK."""
        await self.command(b"COMPRESS DEFLATE")
        self.connection.compress()

    def send(self, command: bytes) -> bytes:
        self.counter += 1
        tag = b"b%d" % self.counter
        self.connection.write(tag + b" " + command + b"\r\n")
        return tag

    async def response(self, tag: bytes, keep: bool = True) -> tuple[list[bytes], int]:
        """
        Read to the tagged reply of ``tag``: (untagged lines with their
        literals inline, or [] if not ``keep``; count of FETCH responses).
        Raises ProtocolError on NO/BAD.
        """
        untagged, fetches = [], 0
        prefix = tag + b" "
        while True:
            line = await self.read_response_line(keep)
            if line.startswith(prefix):
                status = line[len(prefix):]
                if not status.startswith(b"OK"):
                    raise ProtocolError(f"IMAP: {line.decode(errors='replace').strip()}")
                return untagged, fetches
            if _FETCH.match(line):
                fetches += 1
            if keep:
                untagged.append(line)

    async def read_response_line(self, keep: bool = True) -> bytes:
        """One response line, its literals included (or skipped if not ``keep``)."""
        parts = []
        while True:
            line = await self.connection.read_line()
            literal = _LITERAL.search(line)
            if literal is None:
                parts.append(line)
                return b"".join(parts)
            size = int(literal.group(1))
            parts.append(line)
            if keep:
                await self._keep_literal(parts, size)
            else:
                await self.connection.skip_exactly(size)

    async def _keep_literal(self, parts: list[bytes], size: int) -> None:
        buffer = self.connection.buffer
        while len(buffer) < size:
            await self.connection._fill()
        parts.append(bytes(buffer[:size]))
        del buffer[:size]

    async def command(self, command: bytes, keep: bool = True) -> tuple[list[bytes], int]:
        return await self.response(self.send(command), keep)

    async def skim(self, command: bytes) -> int:
        """
        Send ``command`` and read to its tagged OK, keeping nothing: runs
        of whole lines are searched for FETCH responses and the tagged
        reply in one regular-expression pass each, literals skipped by
        their size, so that a FETCH of thousands of messages a second
        times the server, not this client.  Returns the count of FETCH
        responses; raises ProtocolError on NO/BAD.
        """
        tag = self.send(command)
        connection = self.connection
        buffer = connection.buffer
        tagged = tag + b" "
        marker = b"\r\n" + tagged
        fetches = 0
        start = 0
        # Whether ``start`` begins a line (not the rest of one after a literal).
        line_start = True
        while True:
            if line_start and buffer.startswith(tagged, start):
                return fetches + await self._tagged(start)
            literal = _LITERAL_MARK.search(buffer, start)
            limit = literal.start() if literal is not None else len(buffer)
            found = buffer.find(marker, start, limit + len(marker))
            if 0 <= found < limit:
                fetches += self._fetches_in(start, found + 2, line_start)
                return fetches + await self._tagged(found + 2)
            if literal is not None:
                fetches += self._fetches_in(start, literal.start(), line_start)
                skip_to = literal.end() + int(literal.group(1))
                del buffer[:literal.end()]
                skip_to -= literal.end()
                while len(buffer) < skip_to:
                    skip_to -= len(buffer)
                    buffer.clear()
                    await connection._fill()
                del buffer[:skip_to]
                start, line_start = 0, False
                continue
            last = buffer.rfind(b"\r\n", start)
            if last >= 0:
                fetches += self._fetches_in(start, last + 2, line_start)
                del buffer[:last + 2]
                start, line_start = 0, True
            await connection._fill()

    def _fetches_in(self, start: int, end: int, line_start: bool) -> int:
        """FETCH responses beginning in buffer[start:end], whole lines outside literals."""
        buffer = self.connection.buffer
        first = 1 if line_start and _FETCH.match(buffer, start, end) else 0
        return first + len(_FETCH_AFTER_CRLF.findall(buffer, start, end))

    async def _tagged(self, start: int) -> int:
        """The tagged reply begins at buffer[start]: consume it, check it is OK; 0 more FETCHes."""
        connection = self.connection
        buffer = connection.buffer
        while (end := buffer.find(b"\r\n", start)) < 0:
            await connection._fill()
        line = bytes(buffer[start:end])
        del buffer[:end + 2]
        status = line.split(b" ", 1)[1] if b" " in line else b""
        if not status.startswith(b"OK"):
            raise ProtocolError(f"IMAP: {line.decode(errors='replace').strip()}")
        return 0

    async def command_counted(self, command: bytes) -> tuple[bytes, int]:
        """
        A command whose answer carries no literal (FETCH FLAGS, SEARCH):
        read to its tagged reply in large pieces, without looking at each
        line, so that a 20,000-line answer times the server, not us.
        Returns (the untagged answer, count of FETCH responses).
        """
        tag = self.send(command)
        marker = b"\r\n" + tag + b" "
        buffer = self.connection.buffer
        start = 0
        if buffer.startswith(tag + b" "):
            found = -2
        else:
            while (found := buffer.find(marker, start)) < 0:
                start = max(0, len(buffer) - len(marker) + 1)
                await self.connection._fill()
        end = buffer.find(b"\r\n", found + 2)
        while end < 0:
            await self.connection._fill()
            end = buffer.find(b"\r\n", found + 2)
        answer, status = bytes(buffer[:found + 2]), bytes(buffer[found + 2:end])
        del buffer[:end + 2]
        if not status[len(tag) + 1:].startswith(b"OK"):
            raise ProtocolError(f"IMAP: {status.decode(errors='replace')}")
        return answer, answer.count(b" FETCH (")

    async def append(self, mailbox: str, message: bytes, flags: bytes = b"") -> bytes:
        """APPEND with a synchronizing literal; the tagged OK line."""
        self.counter += 1
        tag = b"b%d" % self.counter
        flag_list = b" (" + flags + b")" if flags else b""
        self.connection.write(tag + b" APPEND " + quoted(mailbox) + flag_list + b" {%d}\r\n" % len(message))
        line = await self.connection.read_line()
        if not line.startswith(b"+"):
            raise ProtocolError(f"IMAP APPEND: {line.decode(errors='replace').strip()}")
        view = memoryview(message)
        for offset in range(0, len(message), READ_SIZE):
            self.connection.write(view[offset:offset + READ_SIZE])
            await self.connection.drain()
        self.connection.write(b"\r\n")
        prefix = tag + b" "
        while True:
            line = await self.read_response_line()
            if line.startswith(prefix):
                if not line[len(prefix):].startswith(b"OK"):
                    raise ProtocolError(f"IMAP APPEND: {line.decode(errors='replace').strip()}")
                return line

    async def logout(self) -> None:
        try:
            await self.command(b"LOGOUT")
        finally:
            await self.connection.close()


# -- LMTP -------------------------------------------------------------------


def dot_stuffed(message: bytes) -> bytes:
    """The DATA payload of ``message`` (CRLF lines), terminator included."""
    body = message.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


class Lmtp:
    def __init__(self, connection: Connection):
        self.connection = connection

    @classmethod
    async def open(cls, host: str, port: int) -> Lmtp:
        connection = await Connection.open(host, port)
        lmtp = cls(connection)
        try:
            await lmtp.reply(b"220")
            connection.write(b"LHLO bench.example.org\r\n")
            await lmtp.reply(b"250")
        except BaseException:
            await connection.close()
            raise
        return lmtp

    async def reply(self, code: bytes) -> bytes:
        """A whole (possibly multi-line) reply; ProtocolError unless ``code``."""
        while True:
            line = await self.connection.read_line()
            if line[3:4] != b"-":
                break
        if not line.startswith(code):
            raise ProtocolError(f"LMTP: {line.decode(errors='replace').strip()}")
        return line

    async def deliver(self, recipients: list[str], payload: bytes) -> tuple[float, float]:
        """
        One transaction; ``payload`` from dot_stuffed().  MAIL/RCPT/DATA are
        pipelined (both servers offer PIPELINING).  Returns the seconds
        waited for their replies, and from the message's sending to its
        last reply (the store's part).
        """
        commands = [b"MAIL FROM:<bench@example.org>\r\n"]
        commands += [b"RCPT TO:<%s>\r\n" % recipient.encode() for recipient in recipients]
        started = time.perf_counter()
        self.connection.write(b"".join(commands) + b"DATA\r\n")
        await self.reply(b"250")
        for _ in recipients:
            await self.reply(b"250")
        await self.reply(b"354")
        sent = time.perf_counter()
        self.connection.write(payload)
        # RFC 2033 4.2: one reply per recipient after the final dot.
        for _ in recipients:
            await self.reply(b"250")
        return sent - started, time.perf_counter() - sent

    async def quit(self) -> None:
        self.connection.write(b"QUIT\r\n")
        try:
            await self.reply(b"221")
        finally:
            await self.connection.close()
