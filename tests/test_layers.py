"""
The layers of ``gateway/`` import one way (README "Code map"): protocols ->
policy/net -> store interfaces -> backends; ``mail/`` and the pure modules
import nothing of Twisted.  An import against that direction fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"

# What each layer may import of gateway/, besides itself.
ALLOWED = {
    "mail": {"store.model"},
    "store": {"mail", "durable"},
    "store.sqlite": {"store", "mail", "durable"},
    "store.postgresql": {"store", "store.blobs", "mail"},
    "store.blobs": {"store", "mail"},
    # open_store: the one module that names a backend.
    "store.opening": {"store", "store.sqlite", "store.postgresql", "store.blobs", "mail", "durable"},
    "net": {"policy", "store", "mail", "durable"},
    "policy": {"net", "store", "mail"},
    "pop3": {"policy", "net", "store", "mail"},
    "imap": {"policy", "net", "store", "mail"},
    "lmtp": {"policy", "net", "store", "mail"},
}

# Modules under store/ that are layers of their own: backends, what only
# backends use, and the one module that opens them.
BACKENDS = {"sqlite", "postgresql", "blobs", "opening"}

# Pure logic: no Twisted, so it is tested directly and reused anywhere.
PURE = [
    "mail/*.py",
    "pop3/session.py",
    "pop3/uidl.py",
    "imap/view.py",
    "imap/view_flags.py",
    "imap/sequence.py",
    "imap/search.py",
    "imap/search_keys.py",
    "imap/wire.py",
    "imap/resync.py",
    "imap/id_params.py",
    "imap/fetch.py",
    "imap/fetch_response.py",
    "imap/responses.py",
    "policy/addresses.py",
    "policy/limits.py",
    "policy/throttle.py",
    "policy/sasl.py",
    "policy/plaintext.py",
    "policy/session.py",
    "net/dotlines.py",
    "net/turns.py",
    "heap.py",
    "store/model.py",
    "store/names.py",
    "store/encoding.py",
    "store/postgresql/notices.py",
    "durable.py",
]


def layer_of(module: str) -> str:
    """``gateway.store.sqlite.rows`` -> ``store.sqlite``; ``gateway.cli`` -> ``cli``."""
    parts = module.split(".")[1:]
    if parts[:1] == ["store"] and len(parts) >= 2 and parts[1] in BACKENDS:
        return f"store.{parts[1]}"
    return parts[0]


def permitted(layer: str, imported: str) -> bool:
    target = layer_of(imported)
    if target == layer or target in ALLOWED[layer]:
        return True
    # mail/ produces the store's values and may name them, nothing more.
    return imported.startswith("gateway.store.model") and "store.model" in ALLOWED[layer]


def imports_of(path: Path) -> list[str]:
    """Every module ``path`` imports, with ``from a import b`` read as ``a.b``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(GATEWAY.parent).with_suffix("").parts)


def layered_modules():
    paths = sorted(GATEWAY.rglob("*.py"))
    return [pytest.param(p, id=module_of(p)) for p in paths if layer_of(module_of(p)) in ALLOWED]


@pytest.mark.parametrize("path", layered_modules())
def test_imports_point_one_way(path):
    layer = layer_of(module_of(path))
    against = [name for name in imports_of(path) if name.startswith("gateway.") and not permitted(layer, name)]
    assert not against, f"{module_of(path)} ({layer}) imports against the layers: {against}"


@pytest.mark.parametrize(
    "path", sorted({p for pattern in PURE for p in GATEWAY.glob(pattern)}), ids=lambda p: module_of(p)
)
def test_pure_modules_import_no_twisted(path):
    twisted = [name for name in imports_of(path) if name.split(".")[0] in ("twisted", "zope")]
    assert not twisted, f"{module_of(path)} is pure logic and imports {twisted}"


def test_the_rule_catches_a_protocol_naming_a_backend_or_another_protocol():
    assert not permitted("pop3", "gateway.store.sqlite.store.SQLiteStore")
    assert not permitted("imap", "gateway.store.postgresql.store.PostgreSQLStore")
    assert not permitted("store", "gateway.store.blobs.s3.S3Blobs")
    assert not permitted("store.blobs", "gateway.store.postgresql.chunks.ChunkedBlobs")
    assert not permitted("pop3", "gateway.imap.wire.quote")
    assert not permitted("mail", "gateway.store.interfaces.TemporaryFailure")
    assert not permitted("store", "gateway.imap.view.SelectedView")
    assert permitted("mail", "gateway.store.model.Part")
    assert permitted("imap", "gateway.store.interfaces.NoSuchMailbox")


def test_only_open_store_names_a_backend():
    # DESIGN.md: the process, its tools and the protocols hold the store by
    # its interfaces; gateway/store/opening.py alone picks the backend.
    naming = [
        module_of(path)
        for path in sorted(GATEWAY.rglob("*.py"))
        if not module_of(path).startswith(("gateway.store.sqlite", "gateway.store.opening"))
        and any(name.startswith("gateway.store.sqlite") for name in imports_of(path))
    ]
    assert naming == []
