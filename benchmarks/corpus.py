"""
A seeded corpus: a realistic mix of small text messages, multipart/alternative
messages and messages carrying base64 attachments, with CRLF line endings.

The same (count, seed) always gives the same bytes, so both servers in a run,
and runs on different days, get the same mailboxes.  The default mix averages
about 45 KB a message (1,000 messages ~ 45 MB), in the range of a real inbox.
"""

from __future__ import annotations

import base64
import random
from datetime import datetime, timedelta, timezone

WORDS = (
    "the quarterly report meeting schedule please review attached draft budget invoice "
    "project update deadline customer order shipping delivery thanks regards team network "
    "server outage maintenance window password reset account access holiday calendar lunch "
    "friday monday proposal contract signature approval feedback summary minutes agenda "
    "question answer follow up as discussed below notes figures revenue forecast hiring"
).split()
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar")
DOMAINS = ("example.org", "example.com", "example.net", "mail.example.org")
ATTACHMENTS = (
    ("application/pdf", "report.pdf"),
    ("image/jpeg", "photo.jpg"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "figures.xlsx"),
    ("application/zip", "archive.zip"),
)
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)

# Share of each kind, and the body sizes drawn for it (bytes).
SMALL, ALTERNATIVE, ATTACHMENT = 0.60, 0.25, 0.15
SMALL_TEXT = (800, 7_000)
ALTERNATIVE_TEXT = (3_000, 12_000)
ATTACHMENT_RAW = (30_000, 300_000)


def _address(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(NAMES)
    return name.capitalize(), f"{name}@{rng.choice(DOMAINS)}"


def _paragraphs(rng: random.Random, size: int) -> list[str]:
    """Text lines of at most 76 characters, about ``size`` bytes in all."""
    lines, total, line = [], 0, []
    while total < size:
        word = rng.choice(WORDS)
        if sum(len(w) + 1 for w in line) + len(word) > 72:
            text = " ".join(line)
            lines.append(text)
            total += len(text) + 2
            line = []
            if rng.random() < 0.15:
                lines.append("")
        line.append(word)
    lines.append(" ".join(line))
    return lines


def _headers(rng: random.Random, index: int, content_type: str) -> list[str]:
    sender_name, sender = _address(rng)
    recipient_name, recipient = _address(rng)
    date = EPOCH + timedelta(seconds=index * 3_600 + rng.randrange(3_600))
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 8))).capitalize()
    headers = [
        f"Return-Path: <{sender}>",
        f"From: {sender_name} <{sender}>",
        f"To: {recipient_name} <{recipient}>",
    ]
    if rng.random() < 0.3:
        cc_name, cc = _address(rng)
        headers.append(f"Cc: {cc_name} <{cc}>")
    headers += [
        f"Subject: {subject}",
        "Date: " + date.strftime("%a, %d %b %Y %H:%M:%S +0000"),
        f"Message-ID: <{index}.{rng.getrandbits(48):012x}@{sender.split('@')[1]}>",
        "MIME-Version: 1.0",
        content_type,
    ]
    return headers


def _small(rng: random.Random, index: int) -> list[str]:
    headers = _headers(rng, index, "Content-Type: text/plain; charset=utf-8")
    return headers + [""] + _paragraphs(rng, rng.randrange(*SMALL_TEXT))


def _alternative(rng: random.Random, index: int) -> list[str]:
    boundary = f"=_alt_{rng.getrandbits(64):016x}"
    text = _paragraphs(rng, rng.randrange(*ALTERNATIVE_TEXT))
    html = ["<html><body>"] + [f"<p>{line}</p>" if line else "<br>" for line in text] + ["</body></html>"]
    headers = _headers(rng, index, f'Content-Type: multipart/alternative; boundary="{boundary}"')
    return headers + [
        "",
        "This is a multi-part message in MIME format.",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
        "",
        *text,
        f"--{boundary}",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
        "",
        *html,
        f"--{boundary}--",
    ]


def _base64_lines(data: bytes) -> list[str]:
    encoded = base64.b64encode(data).decode("ascii")
    return [encoded[i : i + 76] for i in range(0, len(encoded), 76)]


def _with_attachment(rng: random.Random, index: int) -> list[str]:
    boundary = f"=_mixed_{rng.getrandbits(64):016x}"
    content_type, filename = rng.choice(ATTACHMENTS)
    payload = rng.randbytes(rng.randrange(*ATTACHMENT_RAW))
    headers = _headers(rng, index, f'Content-Type: multipart/mixed; boundary="{boundary}"')
    return headers + [
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *_paragraphs(rng, rng.randrange(*SMALL_TEXT)),
        f"--{boundary}",
        f'Content-Type: {content_type}; name="{filename}"',
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{filename}"',
        "",
        *_base64_lines(payload),
        f"--{boundary}--",
    ]


def message(index: int, seed: int = 0) -> bytes:
    """Message number ``index`` of the corpus with ``seed``."""
    rng = random.Random(f"{seed}:{index}")
    kind = rng.random()
    if kind < SMALL:
        lines = _small(rng, index)
    elif kind < SMALL + ALTERNATIVE:
        lines = _alternative(rng, index)
    else:
        lines = _with_attachment(rng, index)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def corpus(count: int, seed: int = 0) -> list[bytes]:
    """``count`` messages; message i is the same whatever ``count`` is."""
    return [message(index, seed) for index in range(count)]


def small_message(index: int, seed: int = 0) -> bytes:
    """Message ``index`` of a mailbox of text messages only (about 4 KB each):
    what a person's INBOX of thousands holds, without its attachments."""
    rng = random.Random(f"{seed}:small:{index}")
    return ("\r\n".join(_small(rng, index)) + "\r\n").encode("utf-8")


# How a person leaves an INBOX they read: (flag, every n-th message), by
# sequence number; together a few dozen distinct flag lists, as in real ones.
READING = (("\\Answered", 7), ("$Forwarded", 41), ("\\Flagged", 53), ("NonJunk", 3))
UNREAD_SHARE = 0.05  # the newest 5% are unread, and every 50th older one


def reading_flags(count: int) -> list[tuple[str, list[int]]]:
    """(flag, sequence numbers that carry it) for a mailbox of ``count``
    messages delivered in order, as its owner would have left it."""
    newest_unread = count - int(count * UNREAD_SHARE)
    seen = [n for n in range(1, newest_unread + 1) if n % 50]
    return [("\\Seen", seen)] + [(flag, list(range(every, count + 1, every))) for flag, every in READING]


def big_message(size: int, seed: int = 0) -> bytes:
    """One message of about ``size`` bytes: a text part and one large attachment."""
    rng = random.Random(f"{seed}:big")
    boundary = f"=_big_{rng.getrandbits(64):016x}"
    headers = _headers(rng, 0, f'Content-Type: multipart/mixed; boundary="{boundary}"')
    lines = headers + ["", f"--{boundary}", "Content-Type: text/plain", "", "A large attachment.",
                       f"--{boundary}", "Content-Type: application/octet-stream",
                       "Content-Transfer-Encoding: base64", ""]
    raw = size * 3 // 4 * 76 // 78  # base64 grows by 4/3, CRLF per 76 characters
    lines += _base64_lines(rng.randbytes(raw)) + [f"--{boundary}--"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
