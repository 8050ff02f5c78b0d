"""
POP3 UIDLs derived from (UIDVALIDITY, UID), in Dovecot's ``pop3_uidl_format``.

Nothing is stored: the same pair always gives the same string, so UIDLs survive
restarts and re-indexing, and a mailbox migrated from Dovecot with its UIDs
keeps every UIDL byte for byte.

Accepted notation, a subset of Dovecot's variable expansion:

- 2.3 style: ``%u`` (UID), ``%v`` (UIDVALIDITY), ``%%``, an optional zero-pad
  width (``%08u``) and the hex modifier ``X`` or ``x`` (``%08Xu``), also with
  long names (``%08X{uid}``).  Dovecot prints ``X`` hex in lower case.
- 2.4 style: ``%{uid}``, ``%{uidvalidity}``, ``%{uid | hex}``,
  ``%{uid | hex(8)}`` (zero-padded to 8 digits).

Everything else is refused when the format is parsed, so a bad
``pop3.uidl_format`` stops the server at start-up instead of handing clients
UIDLs that repeat or break RFC 1939 7 (1 to 70 characters in 0x21-0x7E).
"""

from __future__ import annotations

import re

import attrs

DEFAULT_FORMAT = "%08Xu%08Xv"

# RFC 1939 7: "The unique-id of a message ... consists of one to 70
# characters in the range 0x21 to 0x7E".
MAX_UIDL_LENGTH = 70
_MAX_32BIT = 0xFFFFFFFF

_VARIABLES = {"u": "uid", "uid": "uid", "v": "uidvalidity", "uidvalidity": "uidvalidity"}
# Longest rendering of a 32-bit value per printf conversion.
_MAX_DIGITS = {"d": len(str(_MAX_32BIT)), "x": len(f"{_MAX_32BIT:x}")}

_NOT_DERIVABLE = {
    "m": "%m (MD5 of the message header)",
    "md5": "%{md5} (MD5 of the message header)",
    "f": "%f (maildir file name)",
    "filename": "%{filename} (maildir file name)",
    "g": "%g (Dovecot message GUID)",
    "guid": "%{guid} (Dovecot message GUID)",
}

# %[0][width][modifiers](letter | {...}), as Dovecot 2.3 var_expand reads it:
# modifiers are upper-case letters (and x), variables lower-case letters.
# Every part is optional so that any "%" matches and errors can say what is
# missing.
_DIRECTIVE = re.compile(
    r"%(?P<zero>0?)(?P<width>[0-9]*)(?P<modifiers>[A-Zx]*)"
    r"(?:\{(?P<long>[^{}%]*)\}|(?P<short>[a-wyz]?))"
)
_FILTER = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\((?P<arg>[^()]*)\))?")


class UidlFormatError(ValueError):
    """The format cannot be used for POP3 UIDLs; the message says why."""


def _malformed_text(fmt: str, match: re.Match[str]) -> str:
    """The malformed directive ``match`` starts, as the error shows it."""
    if fmt.startswith("{", match.end()):
        brace = fmt.find("}", match.end())
        return fmt[match.start() : len(fmt) if brace < 0 else brace + 1]
    return fmt[match.start() : match.end() + 1]


@attrs.frozen
class UidlFormat:
    """A checked ``pop3_uidl_format``; make one with :meth:`parse`."""

    source: str
    max_length: int
    # A printf-style template over the names "uid" and "uidvalidity".
    _template: str = attrs.field(repr=False)

    @classmethod
    def parse(cls, fmt: str) -> UidlFormat:
        if not isinstance(fmt, str):
            raise UidlFormatError("the UIDL format must be a string")
        template: list[str] = []
        max_length = 0
        has_uid = False
        position = 0
        while position < len(fmt):
            char = fmt[position]
            if char != "%":
                if not "\x21" <= char <= "\x7e":
                    raise UidlFormatError(
                        f"character {char!r} at position {position + 1} is not "
                        "allowed in a UIDL (RFC 1939 7: only 0x21-0x7E)"
                    )
                template.append(char)
                max_length += 1
                position += 1
                continue
            if fmt.startswith("%%", position):
                template.append("%%")
                max_length += 1
                position += 2
                continue
            match = _DIRECTIVE.match(fmt, position)
            if match.group("long") is None and not match.group("short"):
                raise UidlFormatError(
                    f"malformed directive {_malformed_text(fmt, match)!r} at position "
                    f"{position + 1}: expected %u, %v, %% or %{{...}}"
                )
            variable, conversion, width = _directive(match)
            has_uid = has_uid or variable == "uid"
            template.append(f"%({variable})0{width}{conversion}")
            max_length += max(width, _MAX_DIGITS[conversion])
            position = match.end()
        if not has_uid:
            raise UidlFormatError(
                f"{fmt!r} has no %u, UIDLs would repeat" if fmt else "empty format, UIDLs would repeat"
            )
        if max_length > MAX_UIDL_LENGTH:
            raise UidlFormatError(
                f"{fmt!r} can produce {max_length} characters, more than "
                f"the {MAX_UIDL_LENGTH} RFC 1939 7 allows"
            )
        return cls(source=fmt, max_length=max_length, template="".join(template))

    def format(self, uidvalidity: int, uid: int) -> str:
        if not (0 <= uidvalidity <= _MAX_32BIT and 0 <= uid <= _MAX_32BIT):
            raise ValueError(f"UIDVALIDITY {uidvalidity} or UID {uid} is not a 32-bit value")
        return self._template % {"uid": uid, "uidvalidity": uidvalidity}


def _directive(match: re.Match[str]) -> tuple[str, str, int]:
    """(variable, printf conversion, zero-pad width) of one ``%`` directive."""
    text = match.group(0)
    zero, width_text, modifiers = match.group("zero", "width", "modifiers")
    if match.group("short") is not None:
        name, filters = match.group("short"), []
    else:
        name, *filters = (part.strip() for part in match.group("long").split("|"))
    if name in _NOT_DERIVABLE:
        raise UidlFormatError(
            f"{_NOT_DERIVABLE[name]} cannot be derived from (UIDVALIDITY, UID); "
            "use %u and %v (for example the default %08Xu%08Xv)"
        )
    if name not in _VARIABLES:
        raise UidlFormatError(
            f"unknown variable in {text!r}; only %u/%{{uid}} and %v/%{{uidvalidity}} are available"
        )
    variable = _VARIABLES[name]
    if width_text and not zero:
        # Dovecot truncates to a width given without a leading 0, and
        # truncated UIDs repeat.
        raise UidlFormatError(
            f"width without zero padding in {text!r} truncates the value, "
            "UIDLs would repeat; write it as %0<width>..."
        )
    if zero and not width_text:
        raise UidlFormatError(f"zero padding without a width in {text!r}")
    width = int(width_text) if width_text else 0
    if len(modifiers) > 1 or (modifiers and modifiers not in "Xx"):
        raise UidlFormatError(
            f"modifier {modifiers!r} in {text!r} is not supported; only X (hex) is"
        )
    conversion = "x" if modifiers else "d"
    if filters:
        if zero or width_text or modifiers:
            raise UidlFormatError(
                f"{text!r} mixes 2.3 width/modifiers with 2.4 filters; use one style"
            )
        conversion, width = _filter(text, filters)
    return variable, conversion, width


def _filter(text: str, filters: list[str]) -> tuple[str, int]:
    """Printf conversion and width for the 2.4 filters of ``%{var | ...}``."""
    if len(filters) > 1:
        raise UidlFormatError(f"{text!r}: only one filter (hex or hex(N)) is supported")
    match = _FILTER.fullmatch(filters[0])
    if match is None:
        raise UidlFormatError(f"malformed filter {filters[0]!r} in {text!r}")
    if match.group("name") != "hex":
        raise UidlFormatError(
            f"filter {match.group('name')!r} in {text!r} is not supported; only hex and hex(N) are"
        )
    arg = match.group("arg")
    if arg is None:
        return "x", 0
    arg = arg.strip()
    if not arg.isdigit() or not arg.isascii() or int(arg) == 0:
        raise UidlFormatError(f"hex() in {text!r} needs a positive width, got {arg!r}")
    return "x", int(arg)


def format_uidl(fmt: str, uidvalidity: int, uid: int) -> str:
    """Parse ``fmt`` and format one UIDL; parse once and reuse for many."""
    return UidlFormat.parse(fmt).format(uidvalidity, uid)
