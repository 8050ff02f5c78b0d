"""
Results of repeated runs, and the table of medians (and ratios) printed at
the end.  Pure: no I/O beyond returning text.
"""

from __future__ import annotations

import statistics

import attrs

from benchmarks.scenarios import Metrics, Scenario


@attrs.define
class Outcomes:
    """Per (scenario, server): the metrics of each successful run, the errors of the others."""

    runs: dict[tuple[str, str], list[Metrics]] = attrs.field(factory=dict)
    errors: dict[tuple[str, str], list[str]] = attrs.field(factory=dict)

    def add(self, scenario: str, server: str, metrics: Metrics) -> None:
        self.runs.setdefault((scenario, server), []).append(metrics)

    def fail(self, scenario: str, server: str, error: str) -> None:
        self.errors.setdefault((scenario, server), []).append(error)

    def median(self, scenario: str, server: str, metric: str) -> float | None:
        values = [run[metric] for run in self.runs.get((scenario, server), []) if metric in run]
        return statistics.median(values) if values else None

    def cell(self, scenario: str, server: str, metric: str) -> str:
        value = self.median(scenario, server, metric)
        errors = self.errors.get((scenario, server), [])
        if value is None:
            return f"FAILED: {errors[0]}" if errors else "-"
        count = len(self.runs[(scenario, server)])
        text = _number(value)
        if errors:
            text += f" ({count} ok, {len(errors)} failed)"
        return text


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(outcomes: Outcomes, scenarios: tuple[Scenario, ...], servers: list[str]) -> str:
    """A Markdown table: one row per metric, medians per server, and the
    ratio of the last server to the first (for lower-is-better metrics the
    ratio is still last/first: below 1.0 means the last server used less)."""
    header = ["scenario", "metric", *servers]
    if len(servers) == 2:
        header.append(f"{servers[1]}/{servers[0]}")
    rows = [header, ["---"] * len(header)]
    for scenario in scenarios:
        for metric in scenario.metrics:
            cells = [outcomes.cell(scenario.name, server, metric.name) for server in servers]
            if all(cell == "-" for cell in cells):
                continue
            direction = "higher is better" if metric.higher_is_better else "lower is better"
            row = [scenario.name, f"{metric.name} ({direction})", *cells]
            if len(servers) == 2:
                first, last = (outcomes.median(scenario.name, server, metric.name) for server in servers)
                row.append(f"{last / first:.2f}x" if first and last is not None else "-")
            rows.append(row)
    return "\n".join("| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows)


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")
