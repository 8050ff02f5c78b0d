"""Options declared once (gateway/options.py): reading, the default file and reload rules come from one place."""

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import options
from gateway.config import Config
from gateway.options import (
    LIVE,
    RESTART,
    ConfigProblem,
    boolean,
    count,
    each,
    option,
    read,
    reload_rules,
    render_defaults,
    section,
    table_of,
    toml_value,
)


@attrs.frozen
class Inner:
    depth: int = option(3, count, "How deep.")
    names: tuple[str, ...] = option(("a",), each(options.text(), "a list of names"), "Names.\nTwo lines.")


@attrs.frozen
class Outer:
    flag: bool = option(False, boolean, "A switch.", reload=RESTART)
    inner: Inner = section(Inner, "The inner table.")
    frozen: Inner = section(Inner, reload="changing it breaks things")
    pairs: tuple[tuple[str, int], ...] = option((), table_of(count, "a table of counts"), shown="{}")


def test_a_new_option_is_one_declaration():
    # What the reader takes, what the file shows and what a reload does,
    # all from the fields above.
    assert read(Outer, {"flag": True, "inner": {"depth": 5}}) == Outer(flag=True, inner=Inner(depth=5))
    assert render_defaults(Outer, "# preamble") == (
        "# preamble\n"
        "\n"
        "# A switch.\n"
        "# flag = false\n"
        "# pairs = {}\n"
        "\n"
        "[inner]\n"
        "# The inner table.\n"
        "# How deep.\n"
        "# depth = 3\n"
        "# Names.\n"
        "# Two lines.\n"
        '# names = ["a"]\n'
        "\n"
        "[frozen]\n"
        "# How deep.\n"
        "# depth = 3\n"
        "# Names.\n"
        "# Two lines.\n"
        '# names = ["a"]\n'
    )
    assert reload_rules(Outer) == {
        "flag": RESTART,
        "inner.depth": LIVE,
        "inner.names": LIVE,
        "frozen.depth": "changing it breaks things",
        "frozen.names": "changing it breaks things",
        "pairs": LIVE,
    }


@pytest.mark.parametrize(
    "table, key, problem",
    [
        ({"flg": True}, "flg", "unknown key (known: flag, [inner], [frozen], pairs)"),
        ({"inner": 1}, "inner", "must be a table ([inner]), not an integer (1)"),
        ({"inner": {"depth": 0}}, "inner.depth", "must be positive, not 0"),
        ({"inner": {"names": ["x", 2]}}, "inner.names[1]", "must be a string, not an integer (2)"),
        ({"pairs": {"x": -1}}, "pairs.x", "must be positive, not -1"),
    ],
)
def test_a_problem_names_the_dotted_key(table, key, problem):
    with pytest.raises(ConfigProblem) as raised:
        read(Outer, table)
    assert (raised.value.key, raised.value.problem) == (key, problem)


def test_every_config_option_is_shown_and_reloads_by_a_rule():
    rules = reload_rules(Config)
    assert rules["pop3.uidl_format"] not in (LIVE, RESTART)
    assert rules["listeners.pop3"] == RESTART
    assert rules["limits.max_connections"] == LIVE
    from gateway.config import DEFAULT_TOML

    shown = {line[2:].split(" = ")[0] for line in DEFAULT_TOML.splitlines() if " = " in line and line.startswith("# ")}
    # Named tables are one rule, shown as their example's header.
    assert rules["listeners.named"] == RESTART and "# [listeners.NAME]" in DEFAULT_TOML
    assert {name.rsplit(".", 1)[-1] for name in rules if name != "listeners.named"} <= shown
    assert rules["networks"] == LIVE and "\n[networks]\n" in DEFAULT_TOML


@given(
    st.recursive(
        st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=4).map(tuple),
        max_leaves=10,
    )
)
def test_toml_values_read_back(value):
    import tomllib

    def as_read(v):
        return list(map(as_read, v)) if isinstance(v, tuple) else v

    assert tomllib.loads(f"x = {toml_value(value)}")["x"] == as_read(value)
