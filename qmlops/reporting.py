"""What every HTML report in qmlops shares: a matplotlib figure as PNG bytes, and PNG bytes as an inline image."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

__all__ = ["png_bytes", "img_tag"]


def png_bytes(fig: Any, dpi: int = 90) -> bytes:
    """Render ``fig`` (pyplot's or a bare ``Figure``) to PNG; a pyplot figure is closed afterwards."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    if plt.fignum_exists(fig.number if hasattr(fig, "number") else -1):
        plt.close(fig)
    return buffer.getvalue()


def img_tag(png: bytes, alt: str = "") -> str:
    """``<img>`` with the PNG inlined as a data URI (reports stay one self-contained file)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
