"""A content fingerprint of a policy, so that a resumed run can tell a replaced checkpoint
from the one it started with even when the path is the same (and accept a moved copy)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["policy_fingerprint"]

_READ_BYTES = 1 << 20


def policy_fingerprint(spec: str) -> str:
    """``sha256:...`` over a checkpoint folder's files (weights, config, normalization stats,
    tokenizer; documentation excluded), by relative path and content. Specs that are not
    folders (``oracle``, ``tcp://HOST:PORT``) are their own fingerprint: a remote server's
    weights cannot be read from here."""
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        return spec
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".md"):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(_READ_BYTES):
                digest.update(block)
        digest.update(b"\0")
    return f"sha256:{digest.hexdigest()}"
