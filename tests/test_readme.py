"""The README documents what the code does: its config block is the default file."""

import re
from pathlib import Path

from gateway.config import DEFAULT_TOML, loads

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_config_reference_is_the_generated_default():
    text = README.read_text()
    section = text[text.index("## Config reference"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    assert block == DEFAULT_TOML.rstrip("\n") + "\n"
    assert loads(block) == loads("")


def test_readme_names_the_two_commands_that_ci_runs():
    text = README.read_text()
    assert "./dev serve" in text and "./dev test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev test" in ci
