"""One exception tree for qmlops.

Every error a user can cause is a :class:`QmlopsError` subclass that says what went wrong and for which
input. The CLI maps the tree to one-line messages and exit codes (``qmlops.cli``); the HTTP layer maps it to
status codes. Exceptions are plain-argument classes so they pickle across Ray processes unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "reject_unknown",
    "QmlopsError",
    "ValidationError",
    "MalformedRequestError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "NotFoundError",
    "ConflictError",
    "IncompatibleModelError",
    "SchemaVersionError",
    "IntegrityError",
    "UnavailableError",
]


class QmlopsError(Exception):
    """Base of every qmlops error. ``field`` names the offending input where there is one."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.field, self.details))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": type(self).__name__, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.details is not None:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def _rebuild(cls: type[QmlopsError], message: str, field: str | None, details: Any) -> QmlopsError:
    return cls(message, field=field, details=details)


class ValidationError(QmlopsError):
    """Input that breaks a rule: a wrong type, a missing column, a bad value."""

    exit_code = 2
    http_status = 422


class MalformedRequestError(ValidationError):
    """A request that cannot be read at all: malformed JSON, nesting past the limit, a wrong content type."""

    http_status = 400


class PayloadTooLargeError(ValidationError):
    """A request over a size limit (bytes, rows, digits)."""

    http_status = 413


class UnsupportedMediaTypeError(ValidationError):
    """A body of a content type the endpoint does not take."""

    http_status = 415


class NotFoundError(QmlopsError):
    """A named thing (dataset, version, model, ...) does not exist."""

    exit_code = 3
    http_status = 404


class ConflictError(QmlopsError):
    """The request contradicts stored state (an invalid transition, a duplicate)."""

    exit_code = 4
    http_status = 409


class IncompatibleModelError(QmlopsError):
    """A model version cannot be used with the features or environment it would run against."""

    exit_code = 5
    http_status = 409


class SchemaVersionError(QmlopsError):
    """The metadata database was written by a newer qmlops than this one."""

    exit_code = 6
    http_status = 500


class IntegrityError(QmlopsError):
    """Stored content does not match its checksum (tampered or truncated)."""

    exit_code = 7
    http_status = 500


class UnavailableError(QmlopsError):
    """The metadata store cannot be reached right now: its file is locked by another process, the cluster or
    the metadata actor does not answer. The message names what to do; nothing was changed."""

    exit_code = 8
    http_status = 503


def reject_unknown(given: Iterable[str], known: Iterable[str], what: str, *, prefix: str = "") -> None:
    """Refuse keys outside ``known``: a :class:`ValidationError` naming the first unknown one (``prefix`` + key)
    and listing the known ones."""
    allowed = set(known)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValidationError(f"unknown {what} {unknown[0]!r}; known: {', '.join(sorted(allowed))}",
                              field=f"{prefix}{unknown[0]}")  # fmt: skip
