"""
Which of Twisted's private names a module of ours reaches for: each
protocol keeps those in one adapter module (``gateway/imap/engine.py``,
``gateway/pop3/engine.py``), and a private name used anywhere else, or one
of ours that happens to shadow Twisted's, fails the protocol's test.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path


def private_names(cls) -> set[str]:
    """
    The names Twisted's classes among ``cls``'s bases define or set on
    ``self`` with one leading underscore, double-underscore ones as Python
    mangles them (``_IMAP4Server__ebDispatch``).
    """
    names = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("twisted."):
            continue
        names.update(name for name in vars(klass) if name.startswith("_") and not name.startswith("__"))
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names.update(re.findall(r"self\.(_[A-Za-z]\w*)", source))
        owner = klass.__name__.lstrip("_")
        names.update(f"_{owner}{name}" for name in re.findall(r"self\.(__[A-Za-z]\w*)", source)
                     if not name.endswith("__"))
    return names


def names_used(path: Path) -> set[str]:
    """Every attribute, function and plain name a module's code mentions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.Name):
            found.add(node.id)
    return found


def private_uses(package: Path, cls, adapter: str | None) -> dict[str, list[str]]:
    """Module name -> Twisted private names it uses, for every module of ``package`` but ``adapter``."""
    twisted = private_names(cls)
    uses = {}
    for path in sorted(package.glob("*.py")):
        if path.name == adapter:
            continue
        hits = sorted(names_used(path) & twisted)
        if hits:
            uses[path.name] = hits
    return uses


def twisted_source(function) -> str:
    return inspect.getsource(function)
