"""The daily loop: new bars -> incremental features -> universe scoring -> matured labels -> watch -> retrain ->
shadow -> promote or archive, one trading day per step, durable in the metadata store.

``LoopController.open_replay(name, dataset, start, end, policy=...)`` replays stored days; ``run`` drives them.
The decisions are pure functions (:func:`retrain_decision`, :func:`ic_decay`, :func:`change_point`, :func:`shadow_verdict`,
:func:`day_metrics`) over plain values; the controller is the shell around them.
"""

from qmlops.loop._controller import LABEL_HORIZON, LoopController
from qmlops.loop._decide import (
    DayMetrics,
    ShadowVerdict,
    change_point,
    day_metrics,
    ic_decay,
    retrain_decision,
    shadow_verdict,
)
from qmlops.loop._policy import ChangePolicy, LoopPolicy, ShadowPolicy, TriggerPolicy, load_policy

__all__ = [
    "LABEL_HORIZON",
    "ChangePolicy",
    "DayMetrics",
    "LoopController",
    "LoopPolicy",
    "ShadowPolicy",
    "ShadowVerdict",
    "TriggerPolicy",
    "change_point",
    "day_metrics",
    "ic_decay",
    "load_policy",
    "retrain_decision",
    "shadow_verdict",
]
