"""Server-rendered SVG charts: geometry computed here, drawn by the templates (escaped).

``bar_chart``: one row per rule, its fires, impressions and redemptions as horizontal
bars, the rule's name to the left of its row: labels never overlap, however many rules
(the chart grows by a row per rule). ``trend_chart``: fires and redemptions per day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

from admin.reports import DailyCount, RulePerformance

SERIES = (("fires", "Fires", "c1"), ("impressions", "Impressions", "c2"),
          ("redemptions", "Redemptions", "c3"))
LABEL_CHARS = 30  # longer rule names are cut, with the full name as the tooltip


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass
class Text:
    x: float
    y: float
    css: str  # tick | label | legend (and its anchor: start | end | middle)
    text: str
    title: str = ""


@dataclass
class Chart:
    width: int
    height: int
    title: str = ""
    bars: list[Bar] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    grid: list[tuple[float, float, float, float]] = field(default_factory=list)
    legend: list[tuple[float, float, str, str]] = field(default_factory=list)  # x, y, css, text

    @property
    def labels(self) -> list[tuple[float, str]]:
        """The rule (or day) labels, in order: (position, text)."""
        return [(t.y if t.css == "label end" else t.x, t.title or t.text)
                for t in self.texts if t.css.startswith("label")]


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


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[:LABEL_CHARS - 1] + "…"


def _legend(chart: Chart, y: float, left: float) -> None:
    for i, (_, label, css) in enumerate(SERIES):
        chart.legend.append((left + i * 130, y, css, label))


def bar_chart(rows: list[RulePerformance], width: int = 760) -> Chart:
    """Horizontal grouped bars per rule: fires, impressions, redemptions."""
    left, right, top, bar_h, gap = 210, 16, 26, 7, 12
    row_h = bar_h * len(SERIES) + gap
    height = top + max(len(rows), 1) * row_h + 34
    chart = Chart(width, height, title="Fires, impressions and redemptions per rule")
    plot_w = width - left - right
    top_value = max(4.0, nice_max(max([getattr(r, s) for r in rows for s, _, _ in SERIES]
                                      or [0])))
    for i in range(5):
        x = left + plot_w * i / 4
        chart.grid.append((x, top - 4, x, top + len(rows) * row_h))
        chart.texts.append(Text(x, top - 10, "tick middle", f"{top_value * i / 4:g}"))
    for gi, row in enumerate(rows):
        y0 = top + gi * row_h + gap / 2
        chart.texts.append(Text(left - 8, y0 + bar_h * len(SERIES) / 2 + 4, "label end",
                                _short(row.rule), row.rule))
        for si, (attr, label, css) in enumerate(SERIES):
            value = getattr(row, attr)
            chart.bars.append(Bar(left, y0 + si * bar_h, plot_w * value / top_value, bar_h - 1,
                                  css, f"{row.rule}: {value} {label.lower()}"))
    _legend(chart, height - 20, left)
    return chart


def trend_chart(days: list[DailyCount], width: int = 760, height: int = 200) -> Chart:
    """Fires and redemptions per day (all rules of the ruleset)."""
    left, right, top, bottom = 48, 16, 12, 52
    chart = Chart(width, height, title="Fires and redemptions per day")
    plot_h, plot_w = height - top - bottom, width - left - right
    top_value = max(4.0, nice_max(max([max(d.fires, d.redemptions) for d in days] or [0])))
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        chart.grid.append((left, y, width - right, y))
        chart.texts.append(Text(left - 6, y + 4, "tick end", f"{top_value * i / 4:g}"))
    if not days:
        return chart
    slot = plot_w / len(days)
    bar_w = min(18.0, slot * 0.8 / 2)
    every = max(1, math.ceil(len(days) / 10))  # at most ~10 date labels
    for i, d in enumerate(days):
        x0 = left + i * slot + (slot - 2 * bar_w) / 2
        for si, (value, css, word) in enumerate(((d.fires, "c1", "fires"),
                                                 (d.redemptions, "c3", "redemptions"))):
            h = plot_h * value / top_value
            chart.bars.append(Bar(x0 + si * bar_w, top + plot_h - h, bar_w - 1, h, css,
                                  f"{_day(d.day)}: {value} {word}"))
        if i % every == 0:
            chart.texts.append(Text(left + i * slot + slot / 2, top + plot_h + 16,
                                    "label middle", _day(d.day)))
    chart.legend = [(left, height - 14, "c1", "Fires"), (left + 130, height - 14, "c3",
                                                         "Redemptions")]
    return chart


def _day(d: date) -> str:
    return f"{d:%b} {d.day}"
