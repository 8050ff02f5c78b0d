"""
aioimaplib (an asyncio IMAP client many applications use) against the real
server: it strips every "* " it meets in an untagged line, so a
PERMANENTFLAGS list that opens with \\* reaches it mangled; the server lists
\\* last, as Dovecot does.
"""

from __future__ import annotations

import asyncio

import aioimaplib
import pytest

from tests.serverproc import imap_gateway


@pytest.fixture
def server(tmp_path):
    with imap_gateway(tmp_path / "data") as process:
        yield process


async def select_inbox(port: int):
    client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=10)
    await client.wait_hello_from_server()
    assert (await client.login("alice", "pw")).result == "OK"
    await client.append(b"Subject: hi\r\n\r\nbody\r\n", mailbox="INBOX", flags="(\\Seen $Label1)")
    selected = await client.select("INBOX")
    await client.logout()
    return selected


def test_permanentflags_reach_aioimaplib_whole(server):
    selected = asyncio.run(asyncio.wait_for(select_inbox(server.port("imap")), 30))
    assert selected.result == "OK"
    permanent = [line for line in selected.lines if b"PERMANENTFLAGS" in line]
    assert permanent == [b"OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Label1 \\*)]"
                         b" Flags permitted"]
