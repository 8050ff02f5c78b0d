"""
Results of repeated runs, and the table of medians (and ratios) printed at
the end.  Pure: no I/O beyond returning text.
"""

from __future__ import annotations

import statistics

import attrs

from benchmarks.harness import Metric, Metrics, Scenario


@attrs.define
class Outcomes:
    """
    Per (scenario key, server): the metrics of each successful run by run
    number, the errors of the others.
    """

    runs: dict[tuple[str, str], dict[int, Metrics]] = attrs.field(factory=dict)
    errors: dict[tuple[str, str], list[str]] = attrs.field(factory=dict)

    def add(self, scenario: str, server: str, metrics: Metrics, run: int | None = None) -> None:
        """The metrics of run number ``run`` (by default the next) of ``server`` on ``scenario``."""
        done = self.runs.setdefault((scenario, server), {})
        done[len(done) + 1 if run is None else run] = metrics

    def fail(self, scenario: str, server: str, error: str) -> None:
        self.errors.setdefault((scenario, server), []).append(error)

    def median(self, scenario: str, server: str, metric: str) -> float | None:
        values = [run[metric] for run in self.runs.get((scenario, server), {}).values() if metric in run]
        return statistics.median(values) if values else None

    def ratio(self, scenario: str, metric: str, servers: list[str]) -> float | None:
        """
        The last server's figure over the first's, the median of each run's
        own ratio: the machine's speed drifts from one run to the next by
        more than the servers differ (the same server, the same scenario,
        a third faster or slower twenty minutes later), so each figure is
        held against the other server's in the same run, not against its
        median from other runs.  None without a run where both have a
        figure above zero (memory growth lost in the allocator's noise).
        """
        first, last = (self.runs.get((scenario, server), {}) for server in servers)
        ratios = [
            last[run][metric] / first[run][metric]
            for run in sorted(first.keys() & last.keys())
            if first[run].get(metric, 0) > 0 and last[run].get(metric, 0) > 0
        ]
        return statistics.median(ratios) if ratios else None

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

    def standing(self, scenario: str, metric: Metric, servers: list[str]) -> float | None:
        """
        How the last server does against the first on this metric, as a
        factor where above 1.0 is better and below is worse: ``ratio`` for
        rates, its inverse for times and memory.
        """
        if len(servers) != 2:
            return None
        ratio = self.ratio(scenario, metric.name, servers)
        if ratio is None:
            return None
        return ratio if metric.higher_is_better else 1 / ratio


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _rows(outcomes: Outcomes, scenarios: tuple[Scenario, ...], servers: list[str]):
    """(scenario, metric, standing) of every metric measured, the realistic
    ones first, each group from the worst standing to the best."""
    rows = []
    for order, scenario in enumerate(scenarios):
        for metric in scenario.metrics:
            if all(outcomes.cell(scenario.key, server, metric.name) == "-" for server in servers):
                continue
            standing = outcomes.standing(scenario.key, metric, servers)
            rows.append(((not scenario.realistic, standing is None, standing or 0.0, order),
                         scenario, metric, standing))
    rows.sort(key=lambda row: row[0])
    return [row[1:] for row in rows]


def table(outcomes: Outcomes, scenarios: tuple[Scenario, ...], servers: list[str]) -> str:
    """
    A Markdown table: one row per metric, medians per server, and with two
    servers the ratio of the last to the first, the median of the runs' own
    ratios (``Outcomes.ratio``; for lower-is-better metrics too: below 1.0
    there means the last server used less).  Realistic
    scenarios come first, the worst for the last server at the top; best
    cases (pipelining) after them.
    """
    header = ["scenario", "metric", *servers]
    if len(servers) == 2:
        header.append(f"{servers[1]}/{servers[0]}")
    lines = [header, ["---"] * len(header)]
    for scenario, metric, _ in _rows(outcomes, scenarios, servers):
        cells = [outcomes.cell(scenario.key, server, metric.name) for server in servers]
        direction = "higher is better" if metric.higher_is_better else "lower is better"
        name = scenario.name if scenario.realistic else f"{scenario.name} (best case)"
        line = [name, f"{metric.name} ({direction})", *cells]
        if len(servers) == 2:
            ratio = outcomes.ratio(scenario.key, metric.name, servers)
            line.append("-" if ratio is None else f"{ratio:.2f}x")
        lines.append(line)
    return "\n".join("| " + " | ".join(_escape(cell) for cell in line) + " |" for line in lines)


def worst_realistic(outcomes: Outcomes, scenarios: tuple[Scenario, ...], servers: list[str]) -> str | None:
    """One line naming the realistic metric where the last server does worst
    against the first, or None when nothing was compared."""
    for scenario, metric, standing in _rows(outcomes, scenarios, servers):
        if scenario.realistic and metric.ranked and standing is not None:
            first, last = (outcomes.median(scenario.key, server, metric.name) for server in servers)
            ratio = outcomes.ratio(scenario.key, metric.name, servers)
            return (f"Worst realistic case: {scenario.name}, {metric.name}: {servers[1]} {_number(last)}, "
                    f"{servers[0]} {_number(first)} ({ratio:.2f}x)")
    return None


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")
