"""
Command failures that know their tagged response (STYLE.md: exceptions
carry their protocol answer; no handler formats errors by hand).
"""

from __future__ import annotations


class CommandError(Exception):
    """A command failed; the tagged response is ``status text``."""

    def __init__(self, text: bytes, status: bytes = b"NO"):
        super().__init__(text)
        self.status = status
        self.text = text


def bad(text: bytes) -> CommandError:
    return CommandError(text, b"BAD")
