"""Bearer tokens as they travel: a salted, slow hash, never the token (nor a fast digest of it).

The admin token lives in the environment of the process that starts Serve (``QMLOPS_ADMIN_TOKEN``). What goes
into the gateway's ``user_config`` (visible in the Ray dashboard's Serve view) is ``pbkdf2_sha256$<iterations>$
<salt>$<hash>``. The same encoded hash is kept in ``QMLOPS_HOME/run/serve/<name>.hash`` (mode 0600), so every
later config apply (a rollout controller, a CLI without the token in its environment) and every restarted
gateway replica gets the same hash: the configured token survives re-applies and restarts.

Checking a token costs one PBKDF2 run (about 50 ms); a replica remembers tokens it has checked by an HMAC under a
random per-process key, so only the first request of a token pays it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["ITERATIONS", "TokenCheck", "hash_token", "stored_hash", "verify_token"]

ITERATIONS = 100_000
_SCHEME = "pbkdf2_sha256"


def hash_token(token: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", token.encode("utf-8"), salt, iterations)
    return f"{_SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def verify_token(token: str, encoded: str) -> bool:
    try:
        scheme, iterations, salt, digest = encoded.split("$")
        if scheme != _SCHEME:
            return False
        again = hashlib.pbkdf2_hmac("sha256", token.encode("utf-8"), bytes.fromhex(salt), int(iterations))
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(again.hex(), digest)


def stored_hash(path: Path, token: str | None) -> str:
    """The encoded hash to configure: of ``token`` when given (the stored one if it still matches, else a new
    one, stored), else the stored one ("" when none was ever configured)."""
    current = path.read_text().strip() if path.exists() else ""
    if not token:
        return current
    if current and verify_token(token, current):
        return current
    encoded = hash_token(token)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(encoded)
    os.replace(tmp, path)
    return encoded


class TokenCheck:
    """A replica's check of presented tokens against one encoded hash, with a cache of tokens seen."""

    def __init__(self, encoded: str = "") -> None:
        self.encoded = encoded
        self._key = secrets.token_bytes(32)
        self._seen: dict[bytes, bool] = {}

    def set(self, encoded: str) -> None:
        if encoded != self.encoded:
            self.encoded = encoded
            self._seen.clear()

    def __bool__(self) -> bool:
        return bool(self.encoded)

    def check(self, token: str) -> bool:
        if not self.encoded or not token:
            return False
        mac = hmac.new(self._key, token.encode("utf-8", "surrogatepass"), "sha256").digest()
        known = self._seen.get(mac)
        if known is None:
            known = verify_token(token, self.encoded)
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[mac] = known
        return known
