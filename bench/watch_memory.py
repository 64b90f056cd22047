"""Watch memory against the number of watches (issue 16, item 4): the gateway's resident memory with
1,000 and 5,000 watches open through it (quick profile: a few dozen), as production runs it.

For each count, a fresh production gateway (docker-compose.yml's command, its workers) is started and
warmed up with a few GETs; :func:`bench.watch.run_fanout` then opens that many watches of one
ConfigMap through it, waits until every one has its first event, sends one change and checks it
reached every watcher.  The gateway's memory is the sum of the resident set sizes of all its
processes (uvicorn's supervisor, multiprocessing's resource tracker, every worker and the audit writer
a worker starts: each gateway has its own audit journal directory, bench.procs), read before
the watches opened and at its highest while they were open.  A fresh gateway per count keeps one
row's memory out of the next (a process does not give back the memory of closed watches).
"""

from __future__ import annotations

import asyncio

MIB = 2**20
MB = 1e6
COUNTS = {"full": (1000, 5000), "quick": (20, 50)}
TARGET_WATCHES = 5000
TARGET_MB = 1000
# Opening 5,000 TLS watches through the gateway (two TLS handshakes each, the gateway's and kubesim's) took
# 58 s on the shared 2-core machine: longer than the fan-out's 60 s per step leaves.
OPEN_SECONDS = 150.0


async def measure(profile, start, admin) -> dict:
    """``start()``: a fresh, warmed-up production gateway as (bench.run.Target, bench.procs.Service),
    stopped here once measured; ``admin``: kubesim's admin client.  Returns plain data for the report."""
    from bench.watch import run_fanout

    rows, workers = [], 0
    for count in COUNTS[profile.name]:
        target, service = await asyncio.to_thread(start)
        workers = service.workers
        peak_each: dict[int, int] = {}

        def rss() -> int:
            each = service.rss_kib_each()
            for pid, kib in each.items():
                peak_each[pid] = max(peak_each.get(pid, 0), kib)
            return sum(each.values())

        try:
            result = await run_fanout(target.base_url, target.token, target.ca_file, admin, watchers=count, rounds=1,
                                      settle=profile.settle_seconds, rss=rss, open_timeout=OPEN_SECONDS)
        finally:
            await asyncio.to_thread(service.stop)
        rows.append({
            "watches": count,
            "processes": len(peak_each),
            "rss_before_mib": result["rss_before_mib"],
            "rss_peak_mib": result["rss_peak_mib"],
            "rss_peak_mb": round(result["rss_peak_mib"] * MIB / MB, 1),
            "per_watch_kib": result["rss_per_watch_kib"],
            "largest_process_mib": round(max(peak_each.values(), default=0) / 1024, 1),
            "establish_s": result["establish_s"],
            "missing": result["missing"],
            "broken_streams": result["broken_streams"],
        })
    return {"workers": workers, "rows": rows}


def target_row(data: dict) -> dict | None:
    """The targets table's row: 5,000 watches under 1 GB of gateway memory (None when not measured)."""
    row = next((r for r in data.get("rows", ()) if r["watches"] >= TARGET_WATCHES), None)
    if row is None:
        return None
    return {
        "target": f"{TARGET_WATCHES:,} watches under 1 GB of gateway memory (all processes)",
        "measured": f"{row['rss_peak_mb']:.0f} MB peak RSS over {row['processes']} processes with "
                    f"{row['watches']:,} watches, {row['missing']} events missing",
        "met": row["rss_peak_mb"] < TARGET_MB and row["missing"] == 0,
    }


def render(data: dict) -> str:
    """The scaling table (markdown)."""
    if not data or not data.get("rows"):
        return ""
    lines = [
        "### Watch memory against the number of watches",
        "",
        f"A fresh production gateway per row ({data['workers']} worker processes plus uvicorn's supervisor, "
        "multiprocessing's resource tracker and the audit writer process), warmed up with a few GETs: the sum of their resident memory before "
        "the watches opened and at its highest while they were open (one change delivered to every watcher "
        "meanwhile). `AIRLOCK_MAX_CONNECTIONS` is raised to 10,000 per process for this (production default "
        "1,000 per process).",
        "",
        "| watches | RSS before (MiB) | RSS with the watches open (MiB) | per watch (KiB) | largest process (MiB) "
        "| all established (s) | events missing |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in data["rows"]:
        lines.append(f"| {row['watches']:,} | {row['rss_before_mib']:.0f} | {row['rss_peak_mib']:.0f} | "
                     f"{row['per_watch_kib']:.1f} | {row['largest_process_mib']:.0f} | {row['establish_s']:.1f} | "
                     f"{row['missing']} |")
    return "\n".join(lines) + "\n"
