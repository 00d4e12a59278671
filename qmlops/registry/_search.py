"""The registry's filter language, parsed into validated clauses (never spliced into SQL).

``term (and term)*`` where a term is ``NAME OP VALUE``: NAME is a field (name, version, model_type, flavor,
state, created_at, created_by, id), ``metrics.KEY``, ``tags.KEY`` or ``alias``; OP one of = != > >= < <=;
VALUE a number or a single-quoted string ('' for a quote inside). Anything else is refused with the offending
part named.
"""

from __future__ import annotations

import re

from qmlops.exceptions import ValidationError
from qmlops.metadata import SEARCH_FIELDS, Clause

__all__ = ["parse_filter"]

_TOKEN = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)|(?P<op>!=|>=|<=|=|>|<)|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
    r"|'(?P<str>(?:[^']|'')*)')"
)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].strip()[:20]
            raise ValidationError(f"cannot parse the filter at {bad!r} (position {pos})", field="filter")
        kind = m.lastgroup or ""
        value = m.group(kind)
        out.append((kind, value.replace("''", "'") if kind == "str" else value, pos))
        pos = m.end()
    return out


def parse_filter(text: str | None) -> list[Clause]:
    """Clauses for ``text`` (empty or None: no filter)."""
    if not text or not text.strip():
        return []
    tokens = _tokens(text)
    clauses: list[Clause] = []
    i = 0
    while i < len(tokens):
        if clauses:
            kind, word, pos = tokens[i]
            if kind != "name" or word.lower() != "and":
                raise ValidationError(f"expected 'and' at position {pos}, got {word!r} (only 'and' joins terms)",
                                      field="filter")  # fmt: skip
            i += 1
        if i + 3 > len(tokens):
            raise ValidationError(
                "incomplete term at the end of the filter (want NAME OP VALUE)", field="filter"
            )
        (k1, name, p1), (k2, op, p2), (k3, raw, p3) = tokens[i : i + 3]
        if k1 != "name":
            raise ValidationError(f"expected a field name at position {p1}, got {name!r}", field="filter")
        if k2 != "op":
            raise ValidationError(f"expected a comparator (= != > >= < <=) at position {p2}, got {op!r}",
                                  field="filter")  # fmt: skip
        if k3 not in ("num", "str"):
            raise ValidationError(f"expected a number or a 'quoted' string at position {p3}, got {raw!r}",
                                  field="filter")  # fmt: skip
        value: float | int | str = (
            raw if k3 == "str" else (float(raw) if any(c in raw for c in ".eE") else int(raw))
        )
        clauses.append(_clause(name, op, value))
        i += 3
    return clauses


def _clause(name: str, op: str, value: float | int | str) -> Clause:
    lower = name.lower()
    if lower.startswith("metrics."):
        key = name[len("metrics.") :]
        if not _KEY.match(key):
            raise ValidationError(f"bad metric name {key!r}", field="filter")
        if isinstance(value, str):
            raise ValidationError(f"metric {key} compares with a number, got {value!r}", field="filter")
        return Clause("metric", key, op, float(value))
    if lower.startswith("tags."):
        key = name[len("tags.") :]
        if not _KEY.match(key):
            raise ValidationError(f"bad tag name {key!r}", field="filter")
        return Clause("tag", key, op, str(value))
    if lower == "alias":
        if op != "=":
            raise ValidationError("alias compares with = only", field="filter")
        return Clause("alias", "alias", op, str(value))
    if lower in SEARCH_FIELDS:
        if lower == "version" and not isinstance(value, int):
            raise ValidationError("version compares with a whole number", field="filter")
        return Clause("field", lower, op, value)
    raise ValidationError(
        f"unknown filter name {name!r}; use {', '.join(SEARCH_FIELDS)}, metrics.NAME, tags.NAME or alias",
        field="filter",
    )
