"""
Header syntax for L{gateway.mail.message}: RFC 5322 tokens, addresses and MIME
parameters the way Dovecot's lib-mail reads them, IMAP strings the way
Dovecot writes them, and the ENVELOPE (RFC 3501 7.4.2).  Finding fields in a
header block is L{gateway.mail.fields}.

Pure: no Twisted.  Header text is handled as latin-1 so that every byte of a
raw header reaches the wire unchanged.
"""

from __future__ import annotations

import re


def param(params, key):
    for name, value in params or ():
        if name.lower() == key:
            return value
    return None


def languages(value):
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    tags = []
    while True:
        ret, atom = parser.atom()
        if ret < 0:
            break
        tags.append(atom)
        if parser.peek() != ",":
            break
        parser.i += 1
        parser.skip_lwsp()
    return tags or None


def parameters(parser):
    """Content-Type/-Disposition parameters, RFC 2231 continuations merged
    the way Dovecot's rfc2231_parse does."""
    plain = []
    split = []
    while True:
        ret, key, value = parser.content_param()
        if ret == 0:
            break
        if ret < 0:
            if parser.i >= parser.n:
                break
            parser.i += 1
            continue
        star = key.find("*")
        if star >= 0:
            rest = key[star + 1:] or "*"
            digits = len(rest) - len(rest.lstrip("0123456789"))
            index = int(rest[:digits]) if digits else 0
            tail = rest[digits:]
            if tail in ("", "*"):
                split.append((key[:star], index, tail == "*", value))
                continue
        plain.append((key, value))
    split.sort(key=lambda p: (p[0], p[1]))
    i = 0
    while i < len(split):
        j = i
        while j < len(split) and split[j][0].lower() == split[i][0].lower():
            j += 1
        group = split[i:j]
        extended = any(p[2] for p in group)
        if [p[1] for p in group] != list(range(len(group))):
            for key, index, ext, value in group:
                plain.append((f"{key}*{index}*" if ext else f"{key}*{index}", value))
        else:
            pieces = ["''"] if extended and not group[0][2] else []
            for _, _, ext, value in group:
                pieces.append(value.replace("%", "%25") if extended and not ext else value)
            plain.append((group[0][0] + ("*" if extended else ""), "".join(pieces)))
        i = j
    return plain or None


# RFC 5322 atext, and the MIME token characters (atext less "/", "=", "?")
# plus ".", as Dovecot's rfc822_atext_chars table has them; 8-bit is atext.
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]*")
_ATEXT_OR_DOT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff.]*")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-^_`{|}~\x80-\xff.]*")


class Rfc822Parser:
    """
    Dovecot's rfc822-parser over latin-1 text: each method returns -1 on a
    syntax error, 0 at the end of the data, 1 when more data follows.
    """

    __slots__ = ("s", "i", "n", "comment")

    def __init__(self, text):
        self.s = text
        self.i = 0
        self.n = len(text)
        self.comment = ""

    def peek(self):
        return self.s[self.i:self.i + 1]

    def _skip_comment(self):
        s, n = self.s, self.n
        self.comment = ""
        pieces = []
        level = 1
        self.i += 1
        start = self.i
        while self.i < n:
            ch = s[self.i]
            if ch == "(":
                level += 1
            elif ch == ")":
                level -= 1
                if level == 0:
                    pieces.append(s[start:self.i])
                    self.comment = "".join(pieces)
                    self.i += 1
                    return 1 if self.i < n else 0
            elif ch == "\\":
                pieces.append(s[start:self.i])
                start = self.i + 1
                self.i += 1
                if self.i >= n:
                    return -1
            self.i += 1
        return -1

    def skip_lwsp(self):
        s, n = self.s, self.n
        while self.i < n:
            ch = s[self.i]
            if ch in " \t\r\n":
                self.i += 1
            elif ch == "(":
                if self._skip_comment() < 0:
                    return -1
            else:
                break
        return 1 if self.i < n else 0

    def _run(self, pattern):
        start = self.i
        self.i = pattern.match(self.s, start).end()
        text = self.s[start:self.i]
        return (self.skip_lwsp() if self.i < self.n else 0), text

    def mime_token(self):
        return self._run(_TOKEN)

    def atom(self):
        if self.i >= self.n or not _ATEXT.match(self.s, self.i).end() > self.i:
            return -1, ""
        return self._run(_ATEXT)

    def dot_atom(self):
        if self.i >= self.n or not _ATEXT.match(self.s, self.i).end() > self.i:
            return -1, ""
        pieces = []
        while True:
            ret, text = self._run(_ATEXT)
            pieces.append(text)
            if ret <= 0 or self.s[self.i] != ".":
                return ret, "".join(pieces)
            self.i += 1
            pieces.append(".")
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret, "".join(pieces)

    def quoted_string(self):
        s, n = self.s, self.n
        self.i += 1
        pieces = []
        start = self.i
        while self.i < n:
            ch = s[self.i]
            if ch == '"':
                pieces.append(s[start:self.i])
                self.i += 1
                return self.skip_lwsp(), "".join(pieces)
            if ch == "\n":
                end = self.i - 1 if self.i > start and s[self.i - 1] == "\r" else self.i
                pieces.append(s[start:end])
                start = self.i + 1
            elif ch == "\\":
                self.i += 1
                if self.i >= n:
                    return -1, "".join(pieces)
                pieces.append(s[start:self.i - 1])
                start = self.i
            self.i += 1
        return -1, "".join(pieces)

    def phrase(self):
        if self.i >= self.n:
            return 0, ""
        if self.s[self.i] == ".":
            return -1, ""
        words = []
        while True:
            if self.s[self.i] == '"':
                ret, word = self.quoted_string()
            else:
                ret, word = self._run(_ATEXT_OR_DOT)
            words.append(word)
            if ret <= 0:
                return ret, " ".join(words)
            ch = self.s[self.i]
            if ch != '"' and ch != "." and not _ATEXT.match(self.s, self.i).end() > self.i:
                break
        return self.skip_lwsp(), " ".join(words)

    def parse_domain(self):
        self.i += 1  # the "@"
        if self.skip_lwsp() <= 0:
            return -1, ""
        if self.s[self.i] != "[":
            return self.dot_atom()
        start = self.i
        while self.i < self.n:
            ch = self.s[self.i]
            if ch == "\\":
                self.i += 1
            elif ch == "]":
                self.i += 1
                text = self.s[start:self.i]
                return self.skip_lwsp(), text
            self.i += 1
        return -1, ""

    def content_param(self):
        if self.i >= self.n:
            return 0, None, None
        if self.s[self.i] != ";":
            return -1, None, None
        self.i += 1
        if self.skip_lwsp() <= 0:
            return -1, None, None
        ret, key = self.mime_token()
        if ret <= 0 or self.peek() != "=":
            return -1, None, None
        self.i += 1
        value = ""
        ret = self.skip_lwsp()
        if ret > 0:
            ch = self.s[self.i]
            if ch == '"':
                ret, value = self.quoted_string()
            elif ch == "=":
                # Dovecot's workaround for name==?utf-8?b?...?=
                start = self.i
                while self.i < self.n and self.s[self.i] not in "; \t\r\n":
                    self.i += 1
                value = self.s[start:self.i]
            else:
                ret, value = self.mime_token()
        return (-1 if ret < 0 else 1), key, value


class _Addresses(Rfc822Parser):
    """
    Dovecot's message-address parser: RFC 5322 address lists, groups and the
    obsolete route syntax, with MISSING_MAILBOX / MISSING_DOMAIN /
    SYNTAX_ERROR filled in where the header is broken.  Each address is a
    (name, route, mailbox, domain) tuple; a group opens with
    (None, None, group name, None) and closes with all None (RFC 3501 7.4.2).
    """

    __slots__ = ("found", "name", "route", "mailbox", "domain")

    def __init__(self, text):
        super().__init__(text)
        self.found = []
        self._reset()

    def _reset(self):
        self.name = self.route = self.mailbox = self.domain = None

    def _add(self):
        self.found.append((self.name, self.route, self.mailbox, self.domain))
        self._reset()

    def _add_fixed(self):
        if self.mailbox is None:
            self.mailbox = "MISSING_MAILBOX"
        if self.domain is None:
            self.domain = "MISSING_DOMAIN"
        self._add()

    def parse(self):
        if self.skip_lwsp() <= 0:
            return None
        while True:
            ret = self._address()
            if ret == 0:
                break
            if self.peek() != ",":
                break
            self.i += 1
            ret = self.skip_lwsp()
            if ret <= 0:
                if ret < 0:
                    self._add_fixed()
                break
        return self.found

    def _address(self):
        start = self.i
        ret = self._group()
        if ret < 0:
            self.i = start
            ret = self._mailbox()
        return ret

    def _group(self):
        ret, phrase = self.phrase()
        if ret <= 0 or self.peek() != ":":
            return -1
        self.i += 1
        ret = self.skip_lwsp()
        self.mailbox = phrase
        self._add()
        if ret > 0 and self.peek() != ";":
            while True:
                if self._mailbox() <= 0:
                    ret = -1
                    break
                if self.peek() != ",":
                    break
                self.i += 1
                if self.skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if self.peek() != ";":
                ret = -1
            else:
                self.i += 1
                ret = self.skip_lwsp()
        self._add()
        return 0 if ret == 0 else 1

    def _mailbox(self):
        start = self.i
        ret = self._name_addr()
        if ret < 0:
            self.i = start
            ret = self._addr_spec()
        self._add_fixed()
        return ret

    def _name_addr(self):
        ret, phrase = self.phrase()
        if ret <= 0 or self.peek() != "<":
            return -1
        self.name = phrase or None
        if self._angle_addr() < 0:
            self.domain = "SYNTAX_ERROR"
        return 1 if self.i < self.n else 0

    def _angle_addr(self):
        self.i += 1  # the "<"
        ret = self.skip_lwsp()
        if ret <= 0:
            return ret
        if self.peek() == "@":
            if self._route() <= 0 or self.peek() != ":":
                self.route = "INVALID_ROUTE"
                return -1
            self.i += 1
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret
        ret = self._local_part()
        if ret <= 0:
            return ret
        if self.peek() == "@":
            ret, self.domain = self.domain_part()
            if ret <= 0:
                return ret
        if self.peek() != ">":
            return -1
        self.i += 1
        return self.skip_lwsp()

    def domain_part(self):
        ret, domain = self.parse_domain()
        return ret, (domain if ret >= 0 else None)

    def _route(self):
        hops = []
        while True:
            if self.i >= self.n:
                return 0
            if self.peek() != "@":
                break
            ret, domain = self.parse_domain()
            if ret <= 0:
                return ret
            hops.append("@" + domain)
            while self.skip_lwsp() > 0 and self.peek() == ",":
                self.i += 1
        self.route = ",".join(hops)
        return 1

    def _local_part(self):
        if self.i >= self.n:
            return -1
        if self.peek() == '"':
            ret, text = self.quoted_string()
        else:
            ret, text = self.dot_atom()
        if ret < 0:
            return -1
        self.mailbox = text
        return ret

    def _addr_spec(self):
        self.comment = ""
        ret = self._local_part()
        if ret != 0 and self.peek() == "@":
            ret2, self.domain = self.domain_part()
            if ret2 <= 0:
                ret = ret2
        if self.comment:
            self.name = self.comment
        return ret


def addresses(value):
    """
    The address list of a header value (From, To, ...) as Dovecot reads it:
    (name, route, mailbox, domain) tuples, groups opened and closed by
    marker tuples (RFC 3501 7.4.2); None for an absent or empty value.
    """
    if value is None:
        return None
    return _Addresses(value).parse() or None


_NEEDS_LITERAL = re.compile(r"[\r\n\x80-\xff]")
_HUMAN_FAST = re.compile(r"[^\x00\t\r\n\"\\\x80-\xff]*")


def nstring(text):
    """IMAP nstring as Dovecot writes it: quoted unless CR, LF, 8-bit or more
    than four quoted-specials make a literal shorter or necessary."""
    if text is None:
        return "NIL"
    text = text.replace("\x00", "\x80")
    if _NEEDS_LITERAL.search(text) or text.count('"') + text.count("\\") > 4:
        return "{%d}\r\n%s" % (len(text), text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def human_string(text):
    """Dovecot's imap_append_string_for_humans (Subject, display names):
    whitespace runs become one space, ends trimmed; a literal if changed."""
    if (_HUMAN_FAST.match(text).end() == len(text) and "  " not in text
            and not text.startswith(" ") and not text.endswith(" ")):
        return '"' + text + '"'
    out = []
    last_lwsp = True
    for ch in text:
        if ch == " " or ch == "\t":
            if not last_lwsp:
                out.append(" ")
            last_lwsp = True
        elif ch == "\r" or ch == "\n":
            continue
        else:
            out.append("\x80" if ch == "\x00" else ch)
            last_lwsp = False
    if out and last_lwsp:
        out.pop()
    if not out:
        return '""'
    cleaned = "".join(out)
    return "{%d}\r\n%s" % (len(cleaned), cleaned)


def _address_list(addresses):
    if not addresses:
        return "NIL"
    out = ["("]
    for name, route, mailbox, domain in addresses:
        out.append("(%s %s %s %s)" % (
            "NIL" if name is None else human_string(name),
            nstring(route), nstring(mailbox), nstring(domain)))
    out.append(")")
    return "".join(out)


def envelope(fields):
    """RFC 3501 7.4.2 ENVELOPE; Sender and Reply-To default to From."""
    get = fields.get
    # Formatted once: most mail has neither Sender nor Reply-To.
    sender = _address_list(addresses(get("from")))
    subject = get("subject")
    return "(%s %s %s %s %s %s %s %s %s %s)" % (
        nstring(get("date")),
        "NIL" if subject is None else human_string(subject),
        sender,
        _address_list(found) if (found := addresses(get("sender"))) else sender,
        _address_list(found) if (found := addresses(get("reply-to"))) else sender,
        _address_list(addresses(get("to"))),
        _address_list(addresses(get("cc"))),
        _address_list(addresses(get("bcc"))),
        nstring(get("in-reply-to")),
        nstring(get("message-id")),
    )
