"""The one sha256 of a file in flairkit: weights fingerprints, download checks, prediction manifests."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 4 * 1024 * 1024


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of the file at ``path``, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
