"""Content-addressed artifact store: each blob stored once under its sha256, verified on every read."""

from __future__ import annotations

import hashlib

from qmlops import storage
from qmlops.exceptions import IntegrityError, NotFoundError

__all__ = ["ArtifactStore"]


class ArtifactStore:
    """Blobs at ``<root>/sha256/<aa>/<digest>`` (``root`` a local path or a pyarrow.fs URI)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def uri(self, digest: str) -> str:
        return storage.join(self.root, "sha256", digest[:2], digest)

    def put(self, data: bytes) -> tuple[str, str]:
        """Store ``data`` (once per content); returns (sha256, uri)."""
        digest = hashlib.sha256(data).hexdigest()
        uri = self.uri(digest)
        if not storage.exists(uri):
            storage.write_bytes(data, uri)
        return digest, uri

    def get(self, digest: str, uri: str | None = None) -> bytes:
        """The blob, after checking its sha256; a tampered or truncated blob raises :class:`IntegrityError`."""
        uri = uri or self.uri(digest)
        if not storage.exists(uri):
            raise NotFoundError(f"artifact {digest[:12]} is missing from {self.root}", field="artifact")
        data = storage.read_bytes(uri)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(
                f"artifact {digest[:12]}... failed its checksum (found {actual[:12]}..., {len(data)} bytes): "
                "it was modified or truncated; refusing to load it",
                field="artifact",
            )
        return data
