"""Alert rules, channels and the manager that evaluates one against the other.

A rule is ``metric comparator threshold`` over a window, with a severity and a cooldown: while an alert of the
same (rule, subject) is unacknowledged and younger than the cooldown, a repeat only counts (``repeats``) and
nothing is sent again. Rules and channels live in the metadata store (``alert_rules``, ``alert_channels``), so
every process that evaluates metrics (gateway replicas, the resource monitors) applies the same ones, and
deduplication holds across processes because it happens in the store's single writer.

Channels: ``webhook`` (JSON POST; timeout, retries with exponential backoff), ``email`` (SMTP, optional
STARTTLS and login), ``log`` (Python logging) and ``websocket`` (the gateway's ``/v1/ws/alerts`` broadcasts new
alert rows from the store to its connected clients; nothing to send here). Delivery outcomes are stored with the
alert.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Any

from qmlops.exceptions import ValidationError, reject_unknown

__all__ = ["AlertRule", "AlertChannel", "AlertManager", "DEFAULT_RULES", "CHANNEL_KINDS", "deliver",
           "install_defaults"]  # fmt: skip

log = logging.getLogger("qmlops.alerts")

COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}
CHANNEL_KINDS = ("webhook", "email", "websocket", "log")

# What metrics exist, and who produces them (the rule's ``metric`` must be one of these).
METRICS = {
    "drift_share": "drift: share of features drifted after multiple-testing correction (gateway, per model)",
    "prediction_psi": "drift: PSI of the prediction distribution against training (gateway, per model)",
    "max_psi": "drift: largest per-feature PSI (gateway, per model)",
    "p99_ms": "latency: p99 of answered requests over the window (gateway, per model version)",
    "p50_ms": "latency: median of answered requests over the window (gateway, per model version)",
    "error_rate": "errors / requests over the window (gateway, per model version)",
    "ic": "online accuracy: Pearson IC of predictions against feedback (per model version)",
    "rank_ic": "online accuracy: Spearman IC against feedback (per model version)",
    "hit_rate": "online accuracy: sign agreement with feedback (per model version)",
    "cpu_percent": "resources: CPU utilisation of a node (resource monitor, per node)",
    "memory_percent": "resources: memory utilisation of a node",
    "disk_percent": "resources: disk utilisation of a node",
    "gpu_utilization": "resources: highest GPU utilisation on a node (NVML)",
    "gpu_temperature": "resources: highest GPU temperature on a node, Celsius (NVML)",
}


@dataclass(frozen=True)
class AlertRule:
    name: str
    metric: str
    comparator: str
    threshold: float
    window_s: float = 300.0
    severity: str = "warning"
    cooldown_s: float = 600.0
    subject: str | None = None
    enabled: bool = True

    def validate(self) -> AlertRule:
        if not self.name or not isinstance(self.name, str):
            raise ValidationError("a rule needs a name", field="name")
        if self.metric not in METRICS:
            raise ValidationError(f"unknown metric {self.metric!r}; one of {sorted(METRICS)}", field="metric")
        if self.comparator not in COMPARATORS:
            raise ValidationError(f"comparator must be one of {list(COMPARATORS)}", field="comparator")
        if not math.isfinite(float(self.threshold)):
            raise ValidationError("threshold must be a finite number", field="threshold")
        if self.severity not in SEVERITY_ORDER:
            raise ValidationError(f"severity must be one of {list(SEVERITY_ORDER)}", field="severity")
        for key in ("window_s", "cooldown_s"):
            if float(getattr(self, key)) < 0:
                raise ValidationError(f"{key} must be >= 0", field=key)
        return self

    def breached(self, value: float | None) -> bool:
        return (
            value is not None and math.isfinite(value) and COMPARATORS[self.comparator](value, self.threshold)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertRule:
        reject_unknown(data, cls.__dataclass_fields__, "rule field")
        try:
            return cls(**dict(data)).validate()
        except TypeError as exc:
            raise ValidationError(f"incomplete rule: {exc}", field="rule") from None


DEFAULT_RULES = (
    AlertRule("drift-share", "drift_share", ">", 0.2, 0.0, "warning", 900.0),
    AlertRule("prediction-psi", "prediction_psi", ">", 0.25, 0.0, "warning", 900.0),
    AlertRule("latency-p99", "p99_ms", ">", 500.0, 300.0, "warning", 600.0),
    AlertRule("error-rate", "error_rate", ">", 0.05, 300.0, "critical", 600.0),
    AlertRule("online-ic", "ic", "<", -0.05, 3600.0, "warning", 3600.0),
    AlertRule("cpu-high", "cpu_percent", ">", 95.0, 0.0, "warning", 900.0),
    AlertRule("memory-high", "memory_percent", ">", 90.0, 0.0, "critical", 900.0),
    AlertRule("disk-high", "disk_percent", ">", 90.0, 0.0, "critical", 3600.0),
    AlertRule("gpu-hot", "gpu_temperature", ">", 85.0, 0.0, "critical", 900.0),
)


@dataclass(frozen=True)
class AlertChannel:
    name: str
    kind: str
    config: dict[str, Any]
    min_severity: str = "info"
    enabled: bool = True

    def validate(self) -> AlertChannel:
        if self.kind not in CHANNEL_KINDS:
            raise ValidationError(f"channel kind must be one of {CHANNEL_KINDS}", field="kind")
        if self.min_severity not in SEVERITY_ORDER:
            raise ValidationError(f"min_severity must be one of {list(SEVERITY_ORDER)}", field="min_severity")
        c = self.config
        if self.kind == "webhook":
            url = c.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValidationError("a webhook channel needs an http(s) url", field="config.url")
        if self.kind == "email":
            for key in ("host", "to", "from"):
                if not c.get(key):
                    raise ValidationError(f"an email channel needs {key!r}", field=f"config.{key}")
            if "port" in c and not (isinstance(c["port"], int) and 0 < c["port"] < 65536):
                raise ValidationError("port must be 1..65535", field="config.port")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _post_webhook(alert: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"alert": alert}, default=str).encode()
    headers = {"Content-Type": "application/json", **(config.get("headers") or {})}
    retries, timeout, backoff = (
        int(config.get("retries", 3)),
        float(config.get("timeout_s", 5.0)),
        float(config.get("backoff_s", 0.5)),
    )
    last = ""
    for attempt in range(retries + 1):
        try:
            req = urllib.request.Request(config["url"], data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - configured URL
                if 200 <= resp.status < 300:
                    return {"ok": True, "attempts": attempt + 1, "status": resp.status}
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    return {"ok": False, "attempts": retries + 1, "error": last}


def _send_email(alert: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    msg = EmailMessage()
    msg["Subject"] = f"[qmlops {alert['severity']}] {alert['message'][:120]}"
    msg["From"] = config["from"]
    to = config["to"] if isinstance(config["to"], list) else [config["to"]]
    msg["To"] = ", ".join(to)
    msg.set_content(json.dumps(alert, indent=2, default=str))
    try:
        with smtplib.SMTP(
            config["host"], int(config.get("port", 25)), timeout=float(config.get("timeout_s", 10))
        ) as smtp:
            if config.get("starttls"):
                smtp.starttls()
            if config.get("username"):
                smtp.login(config["username"], config.get("password", ""))
            smtp.send_message(msg)
        return {"ok": True}
    except (OSError, smtplib.SMTPException) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def deliver(alert: dict[str, Any], channels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send one alert to every enabled channel whose ``min_severity`` it reaches; one outcome per channel."""
    out = []
    level = SEVERITY_ORDER.get(alert["severity"], 0)
    for ch in channels:
        if not ch.get("enabled", True) or level < SEVERITY_ORDER.get(ch.get("min_severity", "info"), 0):
            continue
        kind, config = ch["kind"], ch.get("config") or {}
        if kind == "webhook":
            result = _post_webhook(alert, config)
        elif kind == "email":
            result = _send_email(alert, config)
        elif kind == "log":
            log.warning(
                "alert %s [%s] %s: %s", alert["id"], alert["severity"], alert.get("subject"), alert["message"]
            )
            result = {"ok": True}
        else:  # websocket: the gateway broadcasts new rows it reads from the store
            result = {"ok": True, "via": "gateway"}
        out.append({"channel": ch["name"], "kind": kind, **result})
    return out


def install_defaults(store: Any) -> list[str]:
    """Store the default rules that are not there yet (user changes to a rule are kept); their names."""
    present = {r["name"] for r in store.monitoring.rules()}
    added = []
    for rule in DEFAULT_RULES:
        if rule.name not in present:
            store.monitoring.put_rule(rule.to_dict())
            added.append(rule.name)
    return added


class AlertManager:
    """Evaluates metric values against the stored rules and sends what fires.

    ``evaluate`` is cheap and synchronous up to the store call; delivery (network I/O) runs in ``executor``
    when one is given, so a slow webhook never holds up the caller. Rules and channels are re-read at most
    every ``refresh_s`` seconds.
    """

    def __init__(self, store: Any, *, executor: Any = None, refresh_s: float = 5.0) -> None:
        self.store = store
        self.executor = executor
        self.refresh_s = refresh_s
        self._loaded = -math.inf
        self._rules: list[AlertRule] = []
        self._channels: list[dict[str, Any]] = []

    def _refresh(self) -> None:
        if time.monotonic() - self._loaded < self.refresh_s:
            return
        self._rules = [AlertRule.from_dict(r) for r in self.store.monitoring.rules()]
        self._channels = self.store.monitoring.channels()
        self._loaded = time.monotonic()

    def rules_for(self, metric: str) -> list[AlertRule]:
        self._refresh()
        return [r for r in self._rules if r.enabled and r.metric == metric]

    def evaluate(
        self,
        source: str,
        subject: str,
        metrics: Mapping[str, float | None],
        details: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Fire every rule breached by ``metrics`` for ``subject``; returns the new alerts (repeats excluded)."""
        self._refresh()
        fired = []
        for rule in self._rules:
            if not rule.enabled or rule.metric not in metrics or (rule.subject and rule.subject != subject):
                continue
            value = metrics[rule.metric]
            if not rule.breached(value):
                continue
            message = f"{rule.metric} {value:.4g} {rule.comparator} {rule.threshold:g} on {subject} (rule {rule.name})"
            alert, new = self.store.monitoring.fire_alert(
                rule=rule.name, severity=rule.severity, source=source, subject=subject, message=message,
                details={"metric": rule.metric, "value": value, "threshold": rule.threshold, **(details or {})},
                cooldown_s=rule.cooldown_s,
            )  # fmt: skip
            if new:
                fired.append(alert)
                if self.executor is not None:
                    self.executor.submit(self._deliver, alert)
                else:
                    self._deliver(alert)
        return fired

    def notify(self, source: str, subject: str, severity: str, message: str,
               details: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        """An event that is an alert by itself (a rollback, say): stored, never deduplicated, and sent."""
        self._refresh()
        alert, _ = self.store.monitoring.fire_alert(rule=None, severity=severity, source=source, subject=subject,
                                                    message=message, details=details, cooldown_s=0.0)  # fmt: skip
        if self.executor is not None:
            self.executor.submit(self._deliver, alert)
        else:
            self._deliver(alert)
        return dict(alert)

    def _deliver(self, alert: dict[str, Any]) -> None:
        try:
            outcomes = deliver(alert, self._channels)
            self.store.monitoring.set_deliveries(alert["id"], outcomes)
        except Exception:  # delivery must never take down the evaluating process
            log.exception("delivering alert %s failed", alert.get("id"))
