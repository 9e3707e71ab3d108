"""Server-rendered SVG charts: geometry computed here, drawn by ``_chart.html`` (escaped)."""

from __future__ import annotations

from dataclasses import dataclass, field

from admin.reports import RulePerformance

SERIES = (("fires", "Fires", "c1"), ("impressions", "Impressions", "c2"),
          ("redemptions", "Redemptions", "c3"))


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    labels: list[tuple[float, str]] = field(default_factory=list)  # (x, text) under groups
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (y, value) on the axis
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css, text)
    left: int = 48
    bottom: int = 0


def nice_max(value: float) -> float:
    if value <= 0:
        return 1
    step = 1.0
    while step * 10 < value:
        step *= 10
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def bar_chart(rows: list[RulePerformance], width: int = 760, height: int = 280) -> Chart:
    """Grouped bars per rule: fires, impressions, redemptions."""
    left, top, bottom = 48, 12, 56
    chart = Chart(width, height, left=left, bottom=height - bottom)
    chart.legend = [(css, label) for _, label, css in SERIES]
    plot_h = height - top - bottom
    top_value = max(4.0, nice_max(max([getattr(r, s) for r in rows for s, _, _ in SERIES] or [0])))
    for i in range(5):
        value = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        chart.ticks.append((y, f"{value:g}"))
    if not rows:
        return chart
    group_w = (width - left - 8) / len(rows)
    bar_w = min(28.0, group_w * 0.8 / len(SERIES))
    for gi, row in enumerate(rows):
        x0 = left + gi * group_w + (group_w - bar_w * len(SERIES)) / 2
        for si, (attr, label, css) in enumerate(SERIES):
            value = getattr(row, attr)
            h = plot_h * value / top_value
            chart.bars.append(Bar(x0 + si * bar_w, top + plot_h - h, bar_w - 2, h, css,
                                  f"{row.rule}: {value} {label.lower()}"))
        chart.labels.append((left + gi * group_w + group_w / 2, row.rule))
    return chart
