"""Feature families: which indicator or Alpha158 group a feature name belongs to (used by explainability)."""

from __future__ import annotations

import re

__all__ = ["feature_family", "FAMILIES"]

_ALPHA_GROUPS = {
    "KBAR": ("KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2"),
    "PRICE": ("OPEN0", "HIGH0", "LOW0", "VWAP0"),
}
_ROLLING_PREFIXES = (
    # longest first, so VSUMP is not read as VSUM + P or SUMP as SUM + P
    "VSUMP", "VSUMN", "VSUMD", "WVMA", "VSTD", "VMA", "SUMP", "SUMN", "SUMD", "CNTP", "CNTN", "CNTD", "CORR",
    "CORD", "IMAX", "IMIN", "IMXD", "QTLU", "QTLD", "RANK", "RSV", "BETA", "RSQR", "RESI", "ROC", "STD", "MAX",
    "MIN", "MA",
)  # fmt: skip
_INDICATOR_PREFIXES = {
    "SMA_": "SMA", "EMA_": "EMA", "RSI_": "RSI", "MACD": "MACD", "BB_": "BOLLINGER", "ATR_": "ATR", "OBV": "OBV",
    "STOCH_": "STOCHASTIC", "ROC_": "ROC_MOMENTUM", "MOM_": "ROC_MOMENTUM",
}  # fmt: skip
FAMILIES = (*_ALPHA_GROUPS, *_ROLLING_PREFIXES, *sorted(set(_INDICATOR_PREFIXES.values())))


def feature_family(name: str) -> str:
    """The family of a feature name: an Alpha158 group (KBAR, PRICE, ROC, MA, STD, CORR, VMA, ...) or an
    indicator family (RSI, MACD, BOLLINGER, ATR, OBV, STOCHASTIC, SMA, EMA, ROC_MOMENTUM); ``OTHER`` if unknown."""
    for group, members in _ALPHA_GROUPS.items():
        if name in members:
            return group
    for prefix, family in _INDICATOR_PREFIXES.items():
        if name.startswith(prefix):
            return family
    match = re.fullmatch(r"([A-Z]+)(\d+)", name)
    if match and match.group(1) in _ROLLING_PREFIXES:
        return match.group(1)
    return "OTHER"
