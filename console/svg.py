"""Small charts as inline SVG, rendered on the server (no JavaScript, no chart library)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 640, 200, 32
#: Room one day label takes on the x axis ("MM-DD" at 11 px, with a gap), in chart units.
LABEL_WIDTH = 40.0


def line_plot(
    values: Sequence[float], *, threshold: float | None = None, label: str = "probability"
) -> str:
    """A line of values in [0, 1] along the x axis (e.g. slice scores along the series)."""
    if not values:
        return '<p class="muted">No slice scores.</p>'
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / max(len(values) - 1, 1)

    def y(value: float) -> float:
        return PAD + inner_h * (1.0 - min(max(value, 0.0), 1.0))

    points = " ".join(f"{PAD + i * step:.1f},{y(v):.1f}" for i, v in enumerate(values))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)} along the series">',
        f'<rect x="{PAD}" y="{PAD}" width="{inner_w}" height="{inner_h}" class="frame"/>',
    ]
    if threshold is not None:
        parts.append(
            f'<line x1="{PAD}" x2="{PAD + inner_w}" y1="{y(threshold):.1f}" '
            f'y2="{y(threshold):.1f}" class="threshold"/>'
        )
    parts.append(f'<polyline points="{points}" class="series"/>')
    for i, v in enumerate(values):
        parts.append(
            f'<circle cx="{PAD + i * step:.1f}" cy="{y(v):.1f}" r="3" class="point">'
            f"<title>slice {i + 1}: {v:.3f}</title></circle>"
        )
    parts += [
        f'<text x="{PAD - 4}" y="{PAD + 4}" class="axis" text-anchor="end">1</text>',
        f'<text x="{PAD - 4}" y="{PAD + inner_h}" class="axis" text-anchor="end">0</text>',
        f'<text x="{PAD}" y="{HEIGHT - 8}" class="axis">slice 1</text>',
        f'<text x="{PAD + inner_w}" y="{HEIGHT - 8}" class="axis" text-anchor="end">'
        f"slice {len(values)}</text>",
        "</svg>",
    ]
    return "".join(parts)


def label_step(count: int, *, slot_width: float, label_width: float = LABEL_WIDTH) -> int:
    """Label every n-th of ``count`` slots so that labels ``label_width`` wide never overlap."""
    if count <= 0 or slot_width <= 0:
        return 1
    return max(1, math.ceil(label_width / slot_width))


def bar_chart(bars: Sequence[tuple[str, int]], *, highlight: Sequence[int] = ()) -> str:
    """Vertical bars with labels (e.g. series per day); ``highlight`` is drawn over them.

    Labels are ``YYYY-MM-DD`` days shown as ``MM-DD``; with many bars only every n-th is
    written (the last one always), so that they never overlap. Each bar's title says its day.
    """
    if not bars:
        return '<p class="muted">No data.</p>'
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    top = max([count for _, count in bars] + list(highlight) + [1])
    width = inner_w / len(bars)
    step = label_step(len(bars), slot_width=width)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">']
    for i, (label, count) in enumerate(bars):
        height = inner_h * count / top
        x = PAD + i * width
        marked_count = highlight[i] if i < len(highlight) else 0
        bar_w = max(width - 2, 1)
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{PAD + inner_h - height:.1f}" width="{bar_w:.1f}" '
            f'height="{height:.1f}" class="bar"><title>{escape(label)}: {count} series, '
            f"{marked_count} suspected</title></rect>"
        )
        if i < len(highlight):
            marked = inner_h * marked_count / top
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{PAD + inner_h - marked:.1f}" '
                f'width="{bar_w:.1f}" height="{marked:.1f}" class="bar-highlight"/>'
            )
        if (len(bars) - 1 - i) % step == 0:
            parts.append(
                f'<text x="{x + width / 2:.1f}" y="{HEIGHT - 8}" class="axis day" '
                f'text-anchor="middle">{escape(label[5:])}</text>'
            )
    parts.append(f'<text x="{PAD - 4}" y="{PAD + 4}" class="axis" text-anchor="end">{top}</text>')
    parts.append("</svg>")
    return "".join(parts)
