"""
Config options declared once: each option's default, check and help text sit
on its attrs field, and the TOML reader, the commented default file and the
reload rules are all read off those declarations.

Pure: no Twisted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

# What a SIGHUP does to an option: takes it ("live"), keeps the running value
# until a restart ("restart"), or refuses the change (any other string, the
# reason).
LIVE = "live"
RESTART = "restart"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class OptionError(Exception):
    """A value an option's check refused; str() is the problem, without the key."""


class ConfigProblem(Exception):
    """A document that does not fit the declarations: the dotted key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


Check = Callable[[Any], Any]


def option(default: Any, check: Check, help: str = "", *, reload: str | None = None, shown: str | None = None):
    """
    An option: ``default`` (immutable), ``check`` turning a TOML value into
    the option's value or raising OptionError, ``help`` for the default
    file (already wrapped; empty when the option before says it all),
    ``reload`` when it differs from its section's, and ``shown``: the
    default as TOML when rendering the value would not say it well.
    """
    return attrs.field(
        default=default,
        metadata={"check": check, "help": help, "reload": reload, "shown": shown},
    )


def section(kind: type, help: str = "", *, reload: str = LIVE):
    """A table of options, ``[name]`` in the file; ``reload`` is its options' default rule."""
    return attrs.field(factory=kind, metadata={"section": kind, "help": help, "reload": reload})


def table(check: Check, help: str, example: str, *, reload: str | None = None):
    """
    An option whose value is a table of entries the user names
    (``[networks]`` with ``lan = [...]``): ``check`` reads the whole table,
    into a tuple that is empty by default.  The default file shows it as a
    section of its own, with ``help`` and then ``example`` commented.
    """
    return attrs.field(
        default=(),
        metadata={"check": check, "help": help, "reload": reload, "shown": None, "example": example},
    )


def named_sections(kind: type, help: str, *, reload: str | None = None):
    """
    Tables of ``kind``'s options under names the user picks, beside the
    options of the section that declares this (``[listeners.legacy]`` in
    ``[listeners]``): read into sorted (name, kind) pairs, empty by
    default.  Names are letters, digits, ``-`` and ``_``.  A kind whose
    options cannot all default checks them in ``__attrs_post_init__``,
    raising OptionError.  The default file shows one under the name NAME,
    each option as an example.
    """
    return attrs.field(default=(), metadata={"named": kind, "help": help, "reload": reload})


def _declared(kind: type) -> Iterator[attrs.Attribute]:
    for field in attrs.fields(kind):
        if field.init and ("check" in field.metadata or "section" in field.metadata or "named" in field.metadata):
            yield field


# -- reading -----------------------------------------------------------------


def read(kind: type, table: Any, where: str = "") -> Any:
    """
    ``kind`` built from a parsed TOML table: every key checked by its
    option's check, unknown keys refused with the known ones named.
    """
    values = {}
    fields = {field.name: field for field in _declared(kind)}
    named_field = next((field for field in fields.values() if "named" in field.metadata), None)
    named = []
    for key, value in table.items():
        dotted = f"{where}.{key}" if where else key
        field = fields.get(key)
        if (field is None or field is named_field) and named_field is not None and isinstance(value, dict):
            if not _NAME.fullmatch(key):
                raise ConfigProblem(dotted, "a name is letters, digits, '-' and '_', at most 64")
            named.append((key, read(named_field.metadata["named"], value, dotted)))
            continue
        if field is None or field is named_field:
            known = ", ".join(_known(where, name, f) for name, f in fields.items())
            raise ConfigProblem(dotted, f"unknown key (known: {known})")
        if "section" in field.metadata:
            if not isinstance(value, dict):
                raise ConfigProblem(dotted, f"must be a table ([{dotted}]), not {kind_of(value)}")
            values[key] = read(field.metadata["section"], value, dotted)
            continue
        try:
            values[key] = field.metadata["check"](value)
        except OptionError as error:
            raise ConfigProblem(dotted, str(error)) from None
        except _ItemProblem as error:
            raise ConfigProblem(f"{dotted}{error.where}", error.problem) from None
    if named_field is not None:
        values[named_field.name] = tuple(sorted(named))
    try:
        return kind(**values)
    except OptionError as error:
        raise ConfigProblem(where, str(error)) from None


_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _known(where: str, name: str, field: attrs.Attribute) -> str:
    if "section" in field.metadata or "example" in field.metadata:
        return f"[{name}]"
    if "named" in field.metadata:
        return f"[{where}.NAME]" if where else "[NAME]"
    return name


class _ItemProblem(Exception):
    """A check of a list or table names the item: ``[2]`` or ``.alice``."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, problem)
        self.where = where
        self.problem = problem


# -- the default file --------------------------------------------------------


def render_defaults(kind: type, preamble: str) -> str:
    """The commented TOML file showing every option of ``kind`` at its default."""
    lines = [*preamble.rstrip("\n").split("\n"), ""]
    lines += _render_table(kind, "")
    return "\n".join(lines) + "\n"


def _render_table(kind: type, where: str) -> list[str]:
    lines: list[str] = []
    subsections = []
    for field in _declared(kind):
        if "section" in field.metadata or "example" in field.metadata:
            subsections.append(field)
        elif "named" in field.metadata:
            lines += _render_named(field, f"{where}.NAME" if where else "NAME")
        else:
            lines += _comment(field.metadata["help"])
            lines.append(f"# {field.name} = {_shown(field)}")
    for field in subsections:
        dotted = f"{where}.{field.name}" if where else field.name
        lines += ["", f"[{dotted}]", *_comment(field.metadata["help"])]
        if "example" in field.metadata:
            lines += _comment(field.metadata["example"])
        else:
            lines += _render_table(field.metadata["section"], dotted)
    return lines


def _render_named(field: attrs.Attribute, dotted: str) -> list[str]:
    """
    The named tables' options, as an example: indented, so that they are not
    read as the enclosing section's options when uncommented.
    """
    lines = ["#", f"# [{dotted}]", *_comment(field.metadata["help"])]
    for option_field in _declared(field.metadata["named"]):
        lines += _comment(option_field.metadata["help"])
        lines.append(f"#   {option_field.name} = {_shown(option_field)}")
    return lines


def _shown(field: attrs.Attribute) -> str:
    shown = field.metadata["shown"]
    return shown if shown is not None else toml_value(field.default)


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.strip("\n").split("\n")] if text else []


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A TOML basic string: control characters (and DEL) only as escapes.
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + _CONTROL.sub(lambda m: "\\u%04x" % ord(m[0]), escaped) + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}; give the option shown=")


# -- reload rules ------------------------------------------------------------


def reload_rules(kind: type, where: str = "", inherited: str = LIVE) -> dict[str, str]:
    """Dotted option name -> its reload rule (LIVE, RESTART or a refusal reason)."""
    rules = {}
    for field in _declared(kind):
        dotted = f"{where}.{field.name}" if where else field.name
        if "named" in field.metadata:
            # Named tables are compared whole: one rule for all of them.
            rules[dotted] = field.metadata["reload"] or inherited
        elif "section" in field.metadata:
            rules.update(reload_rules(field.metadata["section"], dotted, field.metadata["reload"]))
        else:
            rules[dotted] = field.metadata["reload"] or inherited
    return rules


# -- checks ------------------------------------------------------------------


def kind_of(value: Any) -> str:
    """How a TOML value is named in error messages."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    names = {str: "a string", int: "an integer", float: "a float"}
    return f"{names.get(type(value), 'a date/time')} ({value!r})"


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"must be true or false, not {kind_of(value)}")
    return value


def whole(minimum: int = 1, maximum: int | None = None, what: str = "a whole number") -> Check:
    """A whole number in [minimum, maximum]."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"must be {what}, not {kind_of(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            if maximum is not None:
                bound = f"from {minimum} to {maximum}"
            elif minimum == 1:
                bound = "positive"
            else:
                bound = f"at least {minimum}"
            raise OptionError(f"must be {bound}, not {value}")
        return value

    return check


count = whole()
seconds = whole(what="a whole number of seconds")


def delay(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"must be a number of seconds, not {kind_of(value)}")
    if not math.isfinite(value) or value < 0:
        raise OptionError(f"must be zero or more seconds, not {value}")
    return float(value)


def text(what: str = "a string") -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise OptionError(f"must be {what}, not {kind_of(value)}")
        return value

    return check


def choice(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise OptionError(f"must be one of {', '.join(map(repr, choices))}, not {kind_of(value)}")
        return value

    return check


def each(item: Check, what: str, single: bool = False) -> Check:
    """
    A list whose items ``item`` checks (errors name ``[index]``); with
    ``single``, one bare item stands for a list of one (and its errors name
    no index).
    """

    def check(value: Any) -> tuple:
        if single and not isinstance(value, list):
            try:
                return (item(value),)
            except OptionError as error:
                if not isinstance(value, str):
                    raise OptionError(f"must be {what}, not {kind_of(value)}") from None
                raise error from None
        if not isinstance(value, list):
            raise OptionError(f"must be {what}, not {kind_of(value)}")
        checked = []
        for index, entry in enumerate(value):
            try:
                checked.append(item(entry))
            except OptionError as error:
                raise _ItemProblem(f"[{index}]", str(error)) from None
        return tuple(checked)

    return check


def table_of(item: Check, what: str) -> Check:
    """A table of name = value, as sorted (name, value) pairs; errors name ``.name``."""

    def check(value: Any) -> tuple[tuple[str, Any], ...]:
        if not isinstance(value, dict):
            raise OptionError(f"must be {what}, not {kind_of(value)}")
        pairs = []
        for name, entry in value.items():
            try:
                pairs.append((name, item(entry)))
            except OptionError as error:
                raise _ItemProblem(f".{name}", str(error)) from None
            except _ItemProblem as error:
                raise _ItemProblem(f".{name}{error.where}", error.problem) from None
        return tuple(sorted(pairs))

    return check


def then(first: Check, *more: Callable[[Any], None]) -> Check:
    """``first``, then each of ``more`` on its result (they raise OptionError or return None)."""

    def check(value: Any) -> Any:
        value = first(value)
        for extra in more:
            extra(value)
        return value

    return check


def names(kind: type) -> Iterable[str]:
    """The option and section names of ``kind``, in declaration order."""
    return [field.name for field in _declared(kind)]
