"""The lifecycle state machine of a model version.

=============  ===============================================
from           allowed targets
=============  ===============================================
registered     staging, failed, archived
staging        canary, production, archived, failed
canary         production, rolled_back, staging, archived
production     archived, rolled_back, staging
rolled_back    staging, archived
archived       staging
failed         archived
=============  ===============================================

Only one version per model name is in production; promoting another moves the previous one to archived (or
back to staging, by option), in the same transaction. Going to staging, canary or production runs the
compatibility validator first.
"""

from __future__ import annotations

from qmlops.exceptions import ConflictError

__all__ = ["STATES", "TRANSITIONS", "GATED_STATES", "check_transition"]

STATES = ("registered", "staging", "canary", "production", "archived", "rolled_back", "failed")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "registered": ("staging", "failed", "archived"),
    "staging": ("canary", "production", "archived", "failed"),
    "canary": ("production", "rolled_back", "staging", "archived"),
    "production": ("archived", "rolled_back", "staging"),
    "rolled_back": ("staging", "archived"),
    "archived": ("staging",),
    "failed": ("archived",),
}
GATED_STATES = ("staging", "canary", "production")


def check_transition(current: str, target: str) -> None:
    """Raise :class:`ConflictError` naming the allowed targets when ``current -> target`` is not allowed."""
    if target not in STATES:
        raise ConflictError(f"unknown state {target!r}; states are {', '.join(STATES)}", field="state")
    allowed = TRANSITIONS[current]
    if target not in allowed:
        raise ConflictError(
            f"cannot move a {current} version to {target}; allowed from {current}: {', '.join(allowed)}",
            field="state",
            details={"from": current, "to": target, "allowed": list(allowed)},
        )
