"""The gateway's edge: reading and validating request bodies before any handler sees them.

Pure functions and pydantic models, no web framework. Everything a client can send that the rest of the system
cannot store, route or compute with is refused here with a :class:`~qmlops.exceptions.ValidationError` (or a
subclass) that names the field:

- bodies are JSON objects of at most ``MAX_DEPTH`` nesting levels, integers of at most ``MAX_INT_DIGITS`` digits,
  no NaN/Infinity constants, and only text that UTF-8 can encode (a ``\\ud800`` escape decodes to a lone
  surrogate that no database, Arrow column or log line accepts);
- ids (request ids, feedback ids) are short strings of a fixed character set;
- dates are ISO dates in a representable range, without a timezone.

The pydantic models give the OpenAPI schema its request bodies (what the schema-driven fuzz tests generate from)
and validate the small fixed-shape bodies (feedback, admin rollouts).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticError

from qmlops.exceptions import (
    MalformedRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationError,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_ID_LENGTH",
    "AckRequest",
    "EventItem",
    "FeedbackItem",
    "PredictRequest",
    "RolloutRequest",
    "check_content_type",
    "check_id",
    "check_text",
    "field_name",
    "origin_allowed",
    "parse_date",
    "parse_json",
    "parse_timestamp",
    "validate_as",
]

MAX_DEPTH = 32  # nesting levels of a request body; the deepest valid body has 4
MAX_INT_DIGITS = 18  # fits an int64; longer integers are refused, not rounded
MAX_ID_LENGTH = 128
MIN_YEAR, MAX_YEAR = 1900, 2200  # pandas' nanosecond timestamps end in 2262
_ID = re.compile(r"[A-Za-z0-9._:@/+=-]+")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?")
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
)
_EPOCH_MAX = datetime(MAX_YEAR, 12, 31, tzinfo=UTC).timestamp()


def field_name(value: str) -> str:
    """A field name fit for an error body: unencodable characters escaped, long names cut."""
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 120 else text[:117] + "..."


# -- the body ---------------------------------------------------------------------------------------------
def check_content_type(header: str | None) -> None:
    """JSON endpoints take ``application/json`` (or ``+json``) only: a browser may post ``text/plain`` or a form
    to any origin without a preflight, never JSON."""
    media = (header or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise UnsupportedMediaTypeError(
            f"content type {field_name(media or 'none')!r} is not accepted: send application/json",
            field="content-type",
        )


def _reject_constant(value: str) -> Any:
    raise ValidationError(f"{value} is not a number JSON allows; send finite numbers", field="body")


class _Oversized:
    """Stands in for a number too long to take, so the walk over the parsed body can name its field."""

    def __init__(self, text: str) -> None:
        self.text = text


def _number_parser(kind: type, limit: int, seen: list[bool]) -> Any:
    def parse(text: str) -> Any:
        if len(text.lstrip("-")) > limit:
            seen.append(True)
            return _Oversized(text)
        return kind(text)

    return parse


def parse_json(raw: bytes) -> Any:
    """The request's JSON value, checked for depth, number sizes and encodable text (see the module doc)."""
    oversized: list[bool] = []
    try:
        value = json.loads(
            raw or b"null",
            parse_constant=_reject_constant,
            parse_int=_number_parser(int, MAX_INT_DIGITS, oversized),
            parse_float=_number_parser(float, 64, oversized),
        )
    except RecursionError:
        raise MalformedRequestError(f"JSON nested deeper than {MAX_DEPTH} levels", field="body") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(f"malformed JSON: {exc}", field="body") from None
    _check_tree(value, text=_SURROGATE_ESCAPE.search(raw) is not None, numbers=bool(oversized))
    return value


def _too_long(value: _Oversized, field: str) -> PayloadTooLargeError:
    digits = len(value.text.lstrip("-"))
    return PayloadTooLargeError(
        f"a number of {digits} characters is over the limit ({MAX_INT_DIGITS} digits for an integer)",
        field=field_name(field or "body"),
    )


def _check_tree(root: Any, *, text: bool, numbers: bool) -> None:
    """Depth (always), encodable strings (when the raw body has a surrogate escape: valid UTF-8 bytes cannot
    decode to anything else unencodable) and number sizes (when the parser met an oversized one)."""
    if numbers and isinstance(root, _Oversized):
        raise _too_long(root, "body")
    deep = text or numbers
    stack: list[tuple[Any, str, int]] = [(root, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            raise MalformedRequestError(f"JSON nested deeper than {MAX_DEPTH} levels", field=path or "body")
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else key
                if text:
                    check_text(key, where, what="field name")
                if isinstance(item, dict | list) or (deep and isinstance(item, str | _Oversized)):
                    stack.append((item, where, depth + 1))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict | list) or (deep and isinstance(item, str | _Oversized)):
                    stack.append((item, f"{path}[{i}]", depth + 1))
        elif isinstance(value, _Oversized):
            raise _too_long(value, path)
        elif isinstance(value, str) and text:
            check_text(value, path or "body")


def check_text(value: str, field: str, *, what: str = "text") -> str:
    """``value`` if UTF-8 can encode it; a lone surrogate (``\\ud800``) is refused naming ``field``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{what} holds an unpaired UTF-16 surrogate ({ascii(value[exc.start : exc.end])}) that UTF-8 cannot "
            "encode",
            field=field_name(field),
        ) from None
    return value


# -- values -----------------------------------------------------------------------------------------------
def check_id(value: Any, field: str, *, what: str = "id") -> str:
    """A request/feedback id: a string of 1..128 letters, digits and ``. _ : @ / + = -``."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, got {type(value).__name__}", field=field)
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ValidationError(f"{what} must be 1..{MAX_ID_LENGTH} characters, got {len(value)}", field=field)
    if not _ID.fullmatch(value):
        raise ValidationError(f"{what} may hold only letters, digits and . _ : @ / + = -", field=field)
    return value


def parse_date(value: Any, field: str = "date") -> datetime:
    """An ISO date (optionally with a time) between 1900 and 2200, without a timezone, as a naive datetime."""
    hint = "an ISO date such as 2010-06-01 (no timezone)"
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        shown = repr(value) if isinstance(value, str) and len(value) <= 40 else type(value).__name__
        raise ValidationError(f"not a date: {shown}; send {hint}", field=field)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"not a date: {exc}; send {hint}", field=field) from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValidationError(f"year {parsed.year} is outside {MIN_YEAR}..{MAX_YEAR}", field=field)
    return parsed


def parse_timestamp(value: Any, field: str) -> datetime:
    """An event time: an ISO timestamp (a timezone is converted to UTC) or epoch seconds, 1900..2200, as a
    naive UTC datetime."""
    if isinstance(value, bool):
        raise ValidationError("must be an ISO timestamp or epoch seconds", field=field)
    if isinstance(value, int | float):
        if not (_EPOCH_MIN <= float(value) <= _EPOCH_MAX):
            raise ValidationError(f"epoch seconds must lie in {MIN_YEAR}..{MAX_YEAR}", field=field)
        return datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise ValidationError(
            "must be an ISO timestamp (e.g. 2024-05-01T12:00:00Z) or epoch seconds", field=field
        )
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError(f"not a timestamp: {exc}", field=field) from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValidationError(f"year {parsed.year} is outside {MIN_YEAR}..{MAX_YEAR}", field=field)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


_EPOCH_MIN = datetime(MIN_YEAR, 1, 1, tzinfo=UTC).timestamp()


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """A request without ``Origin`` (not from a browser) or from the gateway's own origin or an allowed one."""
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if origin in allowed or "*" in allowed:
        return True
    if host and origin in (f"http://{host.lower()}", f"https://{host.lower()}"):
        return True
    return False


# -- bodies -----------------------------------------------------------------------------------------------
Id = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9._:@/+=-]+$")
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PredictRequest(_Body):
    """``/v1/predict`` and ``/v1/explain``: exactly one of ``features``, ``rows``, ``instrument(s)`` + ``date``.

    Also takes the model's sticky field (``user_id`` by default) as a string or integer."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: Name
    version: int | None = Field(default=None, ge=1, le=10**9)
    request_id: Id | None = None
    features: dict[str, Finite] | None = None
    rows: list[dict[str, Finite]] | None = Field(default=None, min_length=1, max_length=1000)
    instrument: Name | None = None
    instruments: list[Name] | None = Field(default=None, min_length=1, max_length=1000)
    date: Annotated[str, StringConstraints(max_length=32)] | None = None
    max_staleness_days: int | None = Field(default=None, ge=0, le=100_000)
    attributes: dict[str, str | int | float | bool] | None = None
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=256)] | int | None = None
    top: int | None = Field(default=None, ge=1, le=1000)


class FeedbackItem(_Body):
    request_id: Id
    value: Finite


class EventItem(_Body):
    experiment: Name
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=256)] | int
    event: Name
    value: Finite = 1.0
    ts: Annotated[str, StringConstraints(max_length=40)] | float | None = None


class RolloutRequest(_Body):
    model: Name
    version: (
        Annotated[int, Field(ge=1, le=10**9)] | Annotated[str, StringConstraints(min_length=1, max_length=64)]
    )
    strategy: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    options: dict[str, Any] = Field(default_factory=dict)


class AckRequest(_Body):
    by: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "admin"


def validate_as(model: type[BaseModel], data: Any, *, prefix: str = "") -> Any:
    """``model`` validated from ``data``; the first problem as a ValidationError naming its field."""
    try:
        return model.model_validate(data)
    except PydanticError as exc:
        first = exc.errors(include_url=False)[0]
        loc = _path(data, first.get("loc", ()))
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "body")
        raise ValidationError(str(first.get("msg", "invalid")), field=field_name(where)) from None


def _path(data: Any, loc: tuple[Any, ...]) -> str:
    """The part of a pydantic error location that names places in ``data`` (not union member tags)."""
    out, node = "", data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            out += f".{part}"
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if 0 <= part < len(node) else None
        else:
            break
    return out.lstrip(".")
