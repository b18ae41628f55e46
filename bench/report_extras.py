"""The report's sections on the extras: floods, slowloris, memory, argon2, the archive and
the profile."""

from __future__ import annotations

import math

from bench.markdown import num, table
from bench.results import (
    FLOOD_MANY,
    FLOOD_SINGLE,
    SIDECAR,
    SIDECAR_INFO,
    SIDECAR_WORKERS,
    Results,
)


def flood_section(results: Results) -> list[str]:
    duration = float(str(results.settings["duration"]))
    rows = []
    for target in (FLOOD_SINGLE, FLOOD_MANY):
        ratio = results.ratio(target, SIDECAR)
        runs = results.of(target)
        if ratio is None or not runs:
            continue
        statuses: dict[str, int] = {}
        sent = 0
        seconds = 0.0
        argon2 = 0.0
        client_cpu = 0.0
        for run in runs:
            flood = run.flood or {}
            sent += int(str(flood.get("sent", 0)))
            seconds += float(str(flood.get("seconds", 0.0)))
            client_cpu += float(str(flood.get("client_cpu_s") or 0.0))
            counts = flood.get("statuses", {})
            if isinstance(counts, dict):
                for status, n in counts.items():
                    statuses[str(status)] = statuses.get(str(status), 0) + int(n)
            argon2 += run.argon2 or 0.0
        answered = sum(statuses.values()) or 1
        mix = ", ".join(f"{s}: {n / answered:.0%}" for s, n in sorted(statuses.items()))
        rows.append(
            [
                target.removeprefix("sidecar + "),
                num(ratio.of_medians, 2),
                ", ".join(num(v, 2) for v in ratio.per_round),
                f"{sent / seconds:.0f}/s" if seconds else "-",
                mix or "-",
                num(argon2 / len(runs)),
                f"{client_cpu / (len(runs) * duration):.0%}",
            ]
        )
    if not rows:
        return []
    return [
        "## Invalid-key flood",
        "",
        "Valid throughput of a sidecar while a separate process sends it well-formed unknown "
        f"keys (target {results.settings.get('flood_rate', 200):g}/s), divided by the valid "
        "throughput of `sidecar` (same config, no flood) in the same round. The floods hit a "
        "sidecar process of their own. The flood client competes for the same cores: its CPU "
        "(share of one core while wrk ran) is part of the cost measured here.",
        "",
        *table(
            [
                "flood",
                "valid req/s with / without",
                "per round",
                "flood rate",
                "flood answers",
                "argon2 runs per round",
                "flood client CPU",
            ],
            rows,
        ),
    ]


def slowloris_section(results: Results) -> list[str]:
    run = results.slowloris
    if run is None:
        if not results.slowloris_note:
            return []
        return ["## Slowloris", "", results.slowloris_note, ""]
    duration = float(str(results.settings["duration"]))
    plain = results.summary(SIDECAR)
    ratio = run.wrk.requests_per_s / plain.requests_per_s if plain else None
    lifetime = (
        f"{run.lifetime_median_s:.1f} s" if run.lifetime_median_s is not None else "no cut seen"
    )
    failures = ", ".join(f"{k}: {v}" for k, v in run.open_failures.items()) or "none"
    row = [
        f"{run.connections_open} of {run.connections_wanted}",
        num(run.wrk.requests_per_s),
        num(ratio, 2),
        num(run.wrk.p50_ms, 2),
        num(run.wrk.p99_ms, 2),
        str(run.wrk.errors),
        f"{run.rss_before_mib:.1f} / {num(run.rss_first_cycle_mib, 1)} / "
        f"{num(run.rss_second_cycle_mib, 1)} / {run.rss_after_mib:.1f}",
        f"{run.server_closed} / {run.reconnects}",
        lifetime,
    ]
    return [
        "## Slowloris",
        "",
        f"Valid load (the same wrk settings, one run of {duration:g} s) on "
        "`sidecar` while a separate process (`bench/slowloris.py`) holds slowloris "
        "connections to it: each sends a partial request head, then one header byte every "
        "~2 s, never finishing it, and reopens as soon as the sidecar cuts it "
        f"(`limits.header_timeout_s` = {run.header_timeout_s:g} s). The first opens are spread "
        "over most of the header timeout, so cuts and reconnects (TLS handshakes) come in a "
        "steady stream while wrk runs. RSS: the max while every connection is opened and cut "
        "once (1st cycle), then over the next header timeout (2nd cycle: each cut and reopened "
        "again); if the 2nd is not above the 1st, memory is bounded. Ratio: valid req/s over "
        "`sidecar`'s median in the rounds above."
        f" The slowloris process ran {run.seconds:.0f} s; opens that failed: "
        f"{failures}.",
        "",
        *table(
            [
                "slowloris open",
                "valid req/s",
                "/ sidecar",
                "p50 ms",
                "p99 ms",
                "errors",
                "RSS MiB before / 1st cycle / 2nd cycle / after",
                "cut by server / reopened",
                "open → cut (median)",
            ],
            [row],
        ),
    ]


def memory_section(results: Results) -> list[str]:
    lines = ["## Memory (VmRSS; one process per target)", ""]
    for label, start in results.rss_at_start.items():
        lines.append(f"- {label}: {start:.1f} MiB")
    for target in (SIDECAR, SIDECAR_INFO, SIDECAR_WORKERS, FLOOD_SINGLE, FLOOD_MANY):
        peak = results.rss_under_load(target)
        if peak is not None:
            lines.append(f"- under load, {target}: max {peak:.1f} MiB (of one process)")
    for idle in results.idle:
        outcomes = ", ".join(f"{k}: {v}" for k, v in idle.outcomes.items())
        lines.append(
            f"- {idle.target}, {idle.connections_open} of {idle.connections_wanted} idle TLS "
            f"keep-alive connections open (answers {outcomes}): "
            f"{idle.before_mib:.1f} MiB before, {idle.with_idle_mib:.1f} MiB with them "
            f"(≈ {idle.per_connection_kib:.0f} KiB each), {idle.after_mib:.1f} MiB after closing"
        )
    return [*lines, ""]


def argon2_section(results: Results) -> list[str]:
    count = results.argon2
    if count is None:
        return []
    expected = math.ceil(count.loaded_s / count.cache_ttl_s) + 1
    statuses = ", ".join(f"{s}: {n:,.0f}" for s, n in count.requests_by_status.items())
    lines = [
        "## argon2 verifications (sidecar /metrics)",
        "",
        f"- `sidecar_argon2_verifications_total` = {count.total:.0f} on the `sidecar` process "
        f"(never flooded), {count.during_rounds:.0f} of them during its measured rounds",
        f"- the valid key was in use for about {count.loaded_s:.0f} s with "
        f"`keys.cache_ttl_s` = {count.cache_ttl_s:.0f}: one verification per key per TTL "
        f"allows at most about {expected}",
        f"- key cache: {count.cache_hits:,.0f} hits, {count.cache_misses:,.0f} misses; "
        f"requests answered by status: {statuses} (499: wrk hangs up on the requests in "
        "flight when a run ends); "
        f"{count.audit_written:,.0f} audit records written (the last few may still be queued)",
        "",
    ]
    return lines


def profile_section(results: Results) -> list[str]:
    profile = results.profile
    if profile is None:
        return ["## Where the time goes", "", results.profile_note or "not profiled", ""]
    lines = [
        "## Where the time goes (py-spy, sidecar under load)",
        "",
        f"{profile.samples} samples of the event loop's thread ({profile.other_threads} of "
        f"other threads left out). {results.profile_note}",
        "",
        "Own time (the function itself was running):",
        "",
    ]
    lines += table(
        ["#", "function", "samples", "share"],
        [
            [str(i), f"`{c.function}`", str(c.samples), f"{c.share:.1%}"]
            for i, c in enumerate(profile.own, 1)
        ],
    )
    lines += ["Inclusive (the function was anywhere on the stack):", ""]
    lines += table(
        ["#", "function", "samples", "share"],
        [
            [str(i), f"`{c.function}`", str(c.samples), f"{c.share:.1%}"]
            for i, c in enumerate(profile.inclusive, 1)
        ],
    )
    return lines


def archive_section(results: Results) -> list[str]:
    figures = results.archive
    lines = ["## The audit archive (PostgreSQL)", ""]
    if figures is None:
        return [*lines, results.archive_note or "not measured", ""]
    redis_b, pg_b = figures.redis_bytes_per_record or 0, figures.postgres_bytes_per_record or 0
    lines += table(
        ["measure", "value"],
        [
            ["archive throughput (records/s inserted, fsync on)", num(figures.records_per_s)],
            ["records drained / seconds", f"{figures.records:,} / {num(figures.seconds, 1)}"],
            ["record document (bytes)", num(figures.record_bytes)],
            ["Redis bytes per record (MEMORY USAGE / XLEN)", num(redis_b)],
            ["PostgreSQL bytes per record (table and indexes / rows)", num(pg_b)],
            ["Redis under sustained load, window full", figures.note or "-"],
        ],
    )
    sealed = figures.encrypted
    if sealed is not None:
        lines += [
            "The same record with its content encrypted (`audit.encryption_key_file`): "
            f"{num(sealed.record_bytes)} bytes, {num(sealed.redis_bytes_per_record)} in Redis, "
            f"{num(sealed.postgres_bytes_per_record)} in PostgreSQL per record; archived at "
            f"{num(sealed.records_per_s)} records/s.",
            "",
        ]
    if figures.samples:
        shown = figures.samples[:: max(1, len(figures.samples) // 12)]
        lines += [
            "The archived stream under load (s into the load: entries, MiB):",
            "",
            ", ".join(f"{t:.0f} s: {n:,}, {m / 2**20:.1f}" for t, n, m in shown),
            "",
        ]
    lines += [
        "What a steady rate costs, from the bytes per record above (with the archive Redis holds",
        "only the window, the default `archive.redis_window_s` of 3600 s):",
        "",
    ]
    sealed_b = (sealed.postgres_bytes_per_record or 0) if sealed is not None else 0
    rows = [
        [
            f"{rate:,} req/s",
            _size(redis_b * rate * 3600),
            _size(redis_b * rate * 86400),
            _size(pg_b * rate * 86400),
            _size(pg_b * rate * 86400 * 90),
            _size(sealed_b * rate * 86400 * 90) if sealed_b else "-",
        ]
        for rate in (10, 100, 1000)
    ]
    header = ["rate", "Redis, 1 h window", "Redis per day, no archive", "PostgreSQL per day"]
    return lines + table([*header, "PostgreSQL, 90 days", "… encrypted"], rows)


def _size(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB" if size >= 2**30 else f"{size / 2**20:,.0f} MiB"
