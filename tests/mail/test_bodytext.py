"""
gateway.mail.bodytext: the text SEARCH reads, along the part tree parsed at
delivery, a piece at a time: which parts count, what is decoded, what is
never read, and that no message, however big or deep, makes a step big.
"""

import base64
import io
import pathlib

from gateway.mail.bodytext import MAX_TEXT, PIECE, Kind, body_text
from gateway.mail.message import MAX_DEPTH, crlf_chunks, parse_bytes

CORPUS = pathlib.Path(__file__).parent / "corpus"


def crlf(text: bytes) -> bytes:
    return b"".join(crlf_chunks([text]))


class RecordingFile(io.BytesIO):
    """A stored message that records every range read from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, size=-1):
        start = self.tell()
        data = super().read(size)
        self.reads.append((start, start + len(data)))
        return data


def texts(message: bytes, **options) -> list[tuple[Kind, str]]:
    """Each text whole: (kind, the pieces joined)."""
    out, pieces = [], []
    for kind, piece in body_text(parse_bytes(message).root, io.BytesIO(message), **options):
        if piece is None:
            out.append((kind, "".join(pieces)))
            pieces = []
        else:
            pieces.append(piece)
    return out


def body(message: bytes, **options) -> list[str]:
    return [text for kind, text in texts(message, **options) if kind is Kind.BODY]


MIXED = crlf(
    b"Subject: top\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
    b"--b\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"caf=E9 au lait\n"
    b"--b\nContent-Type: application/pdf; name=report.pdf\nContent-Transfer-Encoding: base64\n\n"
    b"JVBERi0xLjQKbmVlZGxl\n"
    b"--b\nContent-Type: message/rfc822\n\n"
    b"Subject: =?utf-8?q?r=C3=A9sum=C3=A9?=\nFrom: a@example.org\n\ninner text\n"
    b"--b\nContent-Type: message/delivery-status\n\n"
    b"Reporting-MTA: dns; mx.example.org\n"
    b"--b--\n")


def test_the_texts_of_a_mixed_message():
    assert texts(MIXED) == [
        (Kind.MIME_HEADER, "Content-Type: text/plain; charset=iso-8859-1\r\n"
                           "Content-Transfer-Encoding: quoted-printable\r\n"),
        (Kind.BODY, "café au lait"),
        (Kind.MIME_HEADER, "Content-Type: application/pdf; name=report.pdf\r\n"
                           "Content-Transfer-Encoding: base64\r\n"),
        (Kind.MIME_HEADER, "Content-Type: message/rfc822\r\n"),
        # An attached message's header is body text, RFC 2047 decoded.
        (Kind.BODY, "Subject: résumé\r\nFrom: a@example.org\r\n"),
        (Kind.BODY, "inner text"),
        # message/* is text, as in Dovecot.
        (Kind.MIME_HEADER, "Content-Type: message/delivery-status\r\n"),
        (Kind.BODY, "Reporting-MTA: dns; mx.example.org"),
    ]


def test_other_media_types_are_never_read():
    file = RecordingFile(MIXED)
    structure = parse_bytes(MIXED)
    list(body_text(structure.root, file, mime_headers=False))
    pdf = structure.root.children[1]
    assert not any(start < pdf.end and end > pdf.body_start for start, end in file.reads)
    # Nor is the message's own header: the index holds it.
    assert all(start >= structure.root.body_start for start, _ in file.reads)


def test_without_mime_headers():
    assert [kind for kind, _ in texts(MIXED, mime_headers=False)] == [Kind.BODY] * 4


def test_corpus_bodies():
    assert body(crlf((CORPUS / "simple.eml").read_bytes())) == ["Hello Bob,\r\nhow are you?\r\n"]
    # quoted-printable UTF-8 and HTML, each a text of its own.
    assert body(crlf((CORPUS / "alternative.eml").read_bytes())) == ["Hello €", "<p>Hello &euro;</p>"]
    nested = body(crlf((CORPUS / "nested.eml").read_bytes()))
    assert nested == ["See attached.", "<p>See attached.</p>"]  # not the PDF


def test_transfer_encoding_counts_without_mime_version():
    # Dovecot's decoder (and the email package) decode it all the same.
    message = crlf(b"Subject: x\nContent-Transfer-Encoding: base64\n\n" + base64.b64encode(b"hidden word") + b"\n")
    assert body(message) == ["hidden word"]


def test_an_unopened_message_is_searched_as_it_is():
    # Past the nesting limit a message/rfc822 is a leaf; Dovecot searches
    # it as text.
    message = (b"Subject: top\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * (MAX_DEPTH + 5)
               + b"Subject: inner\r\n\r\nneedle\r\n")
    found = body(message)
    assert found[-1].endswith("Subject: inner\r\n\r\nneedle\r\n")


def test_an_unopened_multipart_is_not_text():
    message = b"MIME-Version: 1.0\r\n" + b"".join(
        b"Content-Type: multipart/mixed; boundary=%dz\r\n\r\n--%dz\r\n" % (n, n)
        for n in range(10_000)) + b"\r\nneedle\r\n"
    assert body(message) == []


def test_budget():
    part = b"--b\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 10_000 + b"\r\n"
    message = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + part * 3 + b"--b--\r\n"
    found = body(message, mime_headers=False, budget=25_000)
    # Each part header (28 bytes) is read too.
    assert [len(text) for text in found] == [10_000, 10_000, 5_000 - 3 * 28]


def test_every_step_reads_one_piece():
    # 7 MB of text: about a hundred steps, none of them reading more than
    # a piece (a part header may be read whole, up to a megabyte).
    message = b"Content-Type: text/plain\r\n\r\n" + b"0123456789abcde\r\n" * 400_000
    file = RecordingFile(message)
    steps = sum(1 for _ in body_text(parse_bytes(message).root, file))
    assert steps >= len(message) // PIECE
    assert max(end - start for start, end in file.reads) <= PIECE


def test_a_million_parts_read_within_the_budget():
    message = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
               + b"--b\r\n\r\n" * 1_000_000 + b"--b--\r\n")
    file = RecordingFile(message)
    for _ in body_text(parse_bytes(message).root, file):
        pass
    assert sum(end - start for start, end in file.reads) <= MAX_TEXT
