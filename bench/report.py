"""The run's report as Markdown: printed to stdout and written to bench/out/latest.md."""

from __future__ import annotations

from bench import issue6, issue16, light, report_extras
from bench.markdown import num, table
from bench.payloads import SCENARIOS
from bench.results import (
    DIRECT,
    LEAN,
    NAIVE,
    NGINX,
    SIDECAR,
    SIDECAR_ARCHIVE,
    SIDECAR_BASELINE,
    SIDECAR_INFO,
    SIDECAR_WORKERS,
    Ratio,
    Results,
    Verdict,
)

RATIOS = [
    (SIDECAR, SIDECAR_BASELINE),
    (SIDECAR_ARCHIVE, SIDECAR),
    (SIDECAR, LEAN),
    (SIDECAR, NAIVE),
    (SIDECAR, NGINX),
    (SIDECAR, DIRECT),
    (SIDECAR_INFO, SIDECAR),
    (SIDECAR_WORKERS, SIDECAR),
    (LEAN, NAIVE),
    (LEAN, DIRECT),
    (NAIVE, DIRECT),
    (NGINX, DIRECT),
]


CPU_RATIOS = [
    (SIDECAR, SIDECAR_BASELINE),
    (SIDECAR_ARCHIVE, SIDECAR),
    (SIDECAR, LEAN),
    (SIDECAR, NAIVE),
    (SIDECAR, NGINX),
    (SIDECAR_INFO, SIDECAR),
    (SIDECAR_WORKERS, SIDECAR),
    (NAIVE, LEAN),
    (NAIVE, NGINX),
]

SCENARIO_TITLES = {
    "post": "POST of 1 KiB JSON, answered with 1 KiB JSON",
    "get": f"small GET ({SCENARIOS['get'].path}), answered with a small JSON document",
}


def render(results: Results) -> str:
    """The whole report."""
    settings = results.settings
    described = "; ".join(f"{name}: {SCENARIO_TITLES[name]}" for name in results.scenarios)
    lines = [
        "# sidecar benchmark",
        "",
        f"- command: `{results.command}`",
        *(f"- {name}: {value}" for name, value in results.machine.items()),
        "- load: wrk, {threads} threads, {connections} connections, {duration} s per round, "
        "{rounds} rounds in rotating order after {warmup} s of warm-up per target and "
        "scenario".format(**settings),
        f"- scenarios, each measured for every target in the same rounds: {described}. The "
        f"floods run `{results.main_scenario}` only; the sections without a scenario in their "
        f"title show `{results.main_scenario}`",
        "",
        "Absolute numbers are this machine's, at this moment; only the ratios carry over.",
        "",
    ]
    for scenario in results.scenarios:
        lines += _scenario_tables(results, scenario)
    for target, why in results.skipped.items():
        lines.append(f"- {target}: not measured ({why})")
    if results.skipped:
        lines.append("")

    lines += light.section(results)
    lines += report_extras.flood_section(results)
    lines += report_extras.slowloris_section(results)
    lines += report_extras.memory_section(results)
    lines += report_extras.argon2_section(results)
    lines += report_extras.archive_section(results)
    lines += ["## Workers", "", results.workers, ""]

    lines += ["## Targets of issue 16", "", *issue16.PREAMBLE, ""]
    lines += _verdict_table(issue16.verdicts(results))
    lines += ["## Targets of issue 6", ""]
    lines += _verdict_table(issue6.verdicts(results))
    lines += report_extras.profile_section(results)
    lines += ["## What the sidecars logged (warnings and errors)", ""]
    if not results.log_complaints:
        lines += ["nothing", ""]
    for target, found in results.log_complaints.items():
        lines += [f"- {target}:", *(f"  - {n} x `{text}`" for text, n in found.items())]
    if results.log_complaints:
        lines.append("")
    if results.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in results.notes), ""]
    return "\n".join(lines)


def _verdict_table(found: list[Verdict]) -> list[str]:
    return table(
        ["target", "measured", "met"],
        [
            [v.target, v.measured, "-" if v.met is None else ("yes" if v.met else "**no**")]
            for v in found
        ],
    )


def _scenario_tables(results: Results, scenario: str) -> list[str]:
    title = SCENARIO_TITLES[scenario]
    lines = [f"## Throughput and latency, {scenario}: {title} (median over rounds)", ""]
    rows = []
    for target in results.targets(scenario):
        summary = results.summary(target, scenario)
        assert summary is not None
        rows.append(
            [
                target,
                num(summary.requests_per_s),
                num(summary.p50_ms, 2),
                num(summary.p99_ms, 2),
                str(summary.errors),
                num(summary.cpu_us_per_request),
                ", ".join(num(v) for v in summary.rounds),
            ]
        )
    lines += table(
        ["target", "req/s", "p50 ms", "p99 ms", "errors", "CPU µs/req", "req/s per round"], rows
    )
    lines += [
        "CPU µs/req: CPU time of the target's own process(es) (for direct: the upstream; for "
        "nginx: master and worker) divided by the requests wrk completed; the proxies' figures "
        "exclude the upstream's work.",
        "",
        f"## Ratios of throughput, {scenario}",
        "",
    ]
    ratios = [results.ratio(top, bottom, scenario) for top, bottom in RATIOS]
    lines += _ratio_table(ratios)
    lines += [
        f"## Ratios of CPU per request, {scenario}",
        "",
        "How many times the CPU one request costs in the first target, compared with the "
        "second. Steadier than throughput on a shared machine; above 1 means more work.",
        "",
    ]
    lines += _ratio_table([results.cpu_ratio(top, bottom, scenario) for top, bottom in CPU_RATIOS])
    if results.steps:
        chain = [*results.steps, SIDECAR]  # oldest first, this tree last
        pairs = [*zip(chain[1:], chain[:-1], strict=True), (SIDECAR, chain[0])]
        lines += [
            f"## Steps, {scenario}: each revision over the one before, then this tree / the first",
            "",
            "Throughput:",
            "",
        ]
        lines += _ratio_table([results.ratio(top, bottom, scenario) for top, bottom in pairs])
        lines += ["CPU per request:", ""]
        lines += _ratio_table([results.cpu_ratio(top, bottom, scenario) for top, bottom in pairs])
    return lines


def _ratio_table(ratios: list[Ratio | None]) -> list[str]:
    rows = [
        [
            ratio.name,
            num(ratio.of_medians, 2),
            num(ratio.median_per_round, 2),
            ", ".join(num(v, 2) for v in ratio.per_round),
        ]
        for ratio in ratios
        if ratio is not None
    ]
    if not rows:
        return ["(no pair of these targets was measured)", ""]
    return table(["ratio", "of medians", "median per round", "per round"], rows)
