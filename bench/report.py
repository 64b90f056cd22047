"""bench/RESULTS.md from one run's results; the targets are checked against the same run.

The last ``make soak`` figures (bench/soak.json, bench/soak.py; bench/scaleout.json, bench/scaleout.py) are
rendered after them.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import audit_writers, cpu_profile, hotpath, stream_masking, watch_memory

MB = 1e6
MIB = 2**20
SERVERS = ("uvicorn", "daphne")
GET_ROWS = ("direct", "kubectl-proxy", "uvicorn", "daphne", "uvicorn-alt")


def _cells(results: dict) -> tuple[str, str]:
    levels = [int(c) for c in results["small_get"]["direct"]]
    return str(min(levels)), str(max(levels))


def evaluate(results: dict) -> list[dict]:
    """Issue 16's targets, for the production configuration (uvicorn with its workers, default upstream
    client, everything on), all from this one run; a target whose figure was not measured is "not evaluated"."""
    get = results["small_get"]
    low, high = _cells(results)
    ratio = get["uvicorn"][high]["rps"] / get["kubectl-proxy"][high]["rps"]
    added = get["uvicorn"][low]["p50_ms"] - get["direct"][low]["p50_ms"]
    cpu = {level: get["uvicorn"][level].get("proxy_cpu_ms_per_request") for level in (low, high)}
    exec_rates = {payload: runs["uvicorn"]["mb_s"] for payload, runs in results["exec"].items()}
    rows = [
        {
            "target": f"Airlock >= 0.6x kubectl proxy throughput at {high} connections",
            "measured": f"{ratio:.2f}x ({get['uvicorn'][high]['rps']:.0f} vs {get['kubectl-proxy'][high]['rps']:.0f} req/s)",
            "met": ratio >= 0.6,
        },
        {
            "target": "<= 0.5 ms of gateway CPU per small GET (all its processes)",
            "measured": ", ".join(f"{value:.2f} ms at {level} connection{'s' if level != '1' else ''}"
                                  for level, value in cpu.items() if value is not None) or "not measured",
            "met": max(cpu.values()) <= 0.5 if None not in cpu.values() else None,
        },
        {
            "target": f"<= 0.5 ms added p50 over direct at {low} connection",
            "measured": f"{added:+.2f} ms ({get['uvicorn'][low]['p50_ms']:.2f} vs {get['direct'][low]['p50_ms']:.2f} ms)",
            "met": added <= 0.5,
        },
        {
            "target": "exec >= 100 MB/s through the gateway (binary and text)",
            "measured": ", ".join(f"{rate:.1f} MB/s ({payload})" for payload, rate in exec_rates.items()),
            "met": min(exec_rates.values()) >= 100,
        },
    ]
    masking = results.get("stream_masking", {}).get("targets")
    if masking:
        listed, log = masking["secret_list_1000_values"], masking["log_4k_1000_values_mb_s"]
        rows.append({
            "target": "masking >= 100 MB/s with 1,000 known values: 5,000-Secret list and log stream in 4 KB chunks",
            "measured": f"{listed['mb_s']} MB/s ({listed['items']:,}-Secret list), {log} MB/s (log, 4 KiB chunks); "
                        "MB per CPU second, in process",
            "met": min(listed["mb_s"], log) >= 100 if listed["items"] >= 5000 else None,
        })
    if (memory := watch_memory.target_row(results.get("watch_memory", {}))) is not None:
        rows.append(memory)
    three = [c for c in results.get("audit_writers", {}).get("cells", ())
             if c["mode"] == "completions" and c["writers"] == 3]
    if three:
        rows.append({
            "target": ">= 5,000 audit appends per second with three writers on PostgreSQL",
            "measured": f"{three[0]['events_per_s']:,}/s ({three[0]['events_per_transaction']} events per transaction)",
            "met": three[0]["events_per_s"] >= 5000,
        })
    return rows


def _server_sentence(results: dict) -> str:
    """How the production gateway ran: its worker count and its database (older results: one process, SQLite)."""
    workers = results.get("workers", {}).get("uvicorn", 1)
    backends = results.get("backends", {"database": "sqlite", "redis": False})
    database = "PostgreSQL" if backends["database"] == "postgresql" else "SQLite"
    redis = " and Redis" if backends["redis"] else " (no Redis)"
    return (f"The gateway runs exactly as docker-compose.yml starts it (uvicorn, uvloop, httptools, wsproto, no "
            f"access log) with **{workers} worker process{'es' if workers != 1 else ''}**, on {database}{redis}, ")


def _agent_sentence(results: dict) -> str:
    """How the bench agent authenticated and which rules judged it (older results: static tokens, allow-all)."""
    agent = results.get("agent")
    if agent is None:
        return "development static tokens and an allow-all rule"
    return (f"everything on as in production: the agent presents an **OIDC JWT** (RS256, from a local HTTPS "
            f"issuer the gateway discovers and trusts through `AIRLOCK_OIDC_ISSUERS` and `AIRLOCK_OIDC_CA_FILE`; "
            f"a token signed by another key answered {agent['forged_token_status']}), its requests are judged by "
            f"the **production-guardrails preset** bound to its group ({len(agent['rules'])} rules, first match: "
            f"{', '.join(f'`{name}`' for name in agent['rules'])}; `bench-exec` lets it exec in the bench "
            f"namespace without review), responses are masked and every request is audited")


def _other_load(results: dict) -> str:
    cells = [cell for per in results["small_get"].values() for cell in per.values()]
    return f"{sum(c['other_cpu_cores'] for c in cells) / len(cells):.2f}"


def _speed_sentence(probes: list[dict]) -> str:
    """How fast the machine was during the run: bench.machine's speed probe, timed before each stage."""
    values = sorted(p["ms"] for p in probes)
    small = [p["ms"] for p in probes if p["stage"].startswith("small GET,")]
    return (f"Speed of the machine during the run (bench/machine.py's speed probe: the same pure-Python work, "
            f"CPU ms, timed {len(values)} times, before each stage and each round of small GETs): "
            f"fastest {values[0]:g}, median {values[len(values) // 2]:g}, slowest {values[-1]:g}"
            + (f"; during the small-GET rounds {', '.join(f'{v:g}' for v in small)}" if small else "")
            + ". CPU figures of one run scale with it: compare code with alternating A/Bs (bench/small_get.py).")


def _met(value) -> str:
    return {True: "yes", False: "**no**", None: "not evaluated (inputs smaller than the target names)"}[value]


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _errors(cell: dict) -> str:
    bad = {k: v for k, v in cell["errors"].items() if v}
    return ", ".join(f"{k} {v}" for k, v in bad.items()) or "0"


def _cpu(cell: dict, process: str) -> str:
    if f"{process}_cpu_ms_per_request" not in cell:
        return "-"
    return f"{cell[f'{process}_cpu_ms_per_request']:.3f} ({cell[f'{process}_cpu_cores']:.2f})"


def _name(results: dict, key: str) -> str:
    return results["services"][key]["name"]


def render(results: dict, analysis: Path | None = None, soak: dict | None = None, scaleout: str | None = None) -> str:
    m = results["machine"]
    p = results["profile"]
    low, high = _cells(results)
    parts = ["# Airlock benchmark results", ""]
    if analysis is not None and analysis.exists():
        parts += [analysis.read_text().strip(), ""]
    parts += [
        "## The run",
        "",
        f"Generated by `python -m bench.run` (`make bench`) on {results['started']}, profile `{p['name']}`, "
        f"{results['elapsed_s']} s in total, code at commit {results['source']['commit']}"
        + (f" plus {results['source']['uncommitted_files']} uncommitted files (other work in progress)"
           if results["source"]["uncommitted_files"] else "")
        + ". Raw figures: bench/results.json; `python -m bench.report` re-renders this file from them.",
        "",
        _table(["", ""], [
            ["CPU", m["cpu"]], ["cores", m["cores"]], ["memory", f"{m['memory_gib']} GiB"], ["OS", m["os"]],
            ["Python", m["python"]], ["kubectl", m["kubectl"]],
            ["packages", ", ".join(f"{k} {v}" for k, v in m["packages"].items())],
        ]),
        "",
        "Everything shares this machine: kubesim (Python, aiohttp, one process), the gateway processes, "
        "kubectl proxy and the load generators. Measurements run one after another. " + _server_sentence(results) +
        _agent_sentence(results) + "; daphne runs the same `airlock.asgi:application`. "
        f"Upstream HTTP client in production: **{results['clients']['default']}**; "
        f"compared with: {results['clients']['alternative']}.",
        "",
        f"Other processes on the machine used {_other_load(results)} cores on average during the small-GET "
        "runs (per-cell figures below).",
        "",
        *([_speed_sentence(results["speed_probes"]), ""] if results.get("speed_probes") else []),
        "## Targets (production configuration, same run)",
        "",
        _table(["target", "measured", "met"],
               [[t["target"], t["measured"], _met(t["met"])] for t in results["targets"]]),
        "",
        "## 1. Small GET",
        "",
        f"`GET /api/v1/namespaces/default/configmaps/bench-small` (about 0.4 KB of JSON) with wrk, keep-alive "
        f"connections; each cell is {p['repetitions']} runs of {p['seconds']} s taken round-robin over the "
        "targets: req/s over all runs, latency percentiles the median of the runs'. Direct and Airlock are "
        "HTTPS; kubectl proxy listens on plain HTTP (its upstream side is HTTPS), so its client side does less work.",
        "",
        _table(["path", "connections", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
                "proxy CPU ms/req (cores)", "kubesim CPU ms/req (cores)", "wrk cores", "other processes' cores"], [
            [_name(results, key), c, f"{cell['rps']:.0f}", f"{cell['p50_ms']:.2f}", f"{cell['p90_ms']:.2f}",
             f"{cell['p99_ms']:.2f}", f"{cell['max_ms']:.1f}", _errors(cell), _cpu(cell, "proxy"), _cpu(cell, "kubesim"),
             cell["wrk_cpu_cores"], cell["other_cpu_cores"]]
            for key in GET_ROWS for c, cell in results["small_get"][key].items()
        ]),
        "",
        "CPU columns: CPU time the process in the middle (kubectl proxy or the gateway) and kubesim used "
        "during the cell, divided by the requests served; in brackets the cores each kept busy (the gateway's "
        f"summed over every process it started: uvicorn's supervisor, its {results.get('workers', {}).get('uvicorn', 1)} "
        "worker process(es) and the audit writer process a worker spawns; one core per worker is a worker's ceiling). "
        "The last column is the CPU every other process on the "
        "machine used during the cell (other work sharing this machine); well above 0 means the cell "
        "competed for the 2 cores and its figures are pessimistic.",
        "",
        *(["## 1b. Where the CPU of a small GET goes (bench/cpu_profile.py)", "",
            "One more wrk run per connection count on the production gateway while py-spy samples each of its "
            "processes without stopping them; each sample is charged to the stage of its deepest frame that "
            "belongs to one, and a stage's share of a process's samples times that process's CPU per GET "
            "(from /proc, same run) gives microseconds per GET.", "",
            cpu_profile.render(results["cpu_profile"]), ""] if "cpu_profile" in results else []),
        "## 2. Watch fan-out",
        "",
        f"{p['watchers']} concurrent watches on one ConfigMap (raw TLS streams from one asyncio client "
        f"process), then {p['rounds']} changes written straight to kubesim, one at a time once every "
        "watcher has the previous one. Latency: PATCH sent -> event read by a watcher, so it includes "
        "kubesim encoding the event once per watcher and the client reading all of them. RSS is the "
        "gateway's VmRSS, summed over all its processes (uvicorn's supervisor and workers).",
        "",
        _table(["path", "watches", "opened in s", "events", "missing", "p50 ms", "p99 ms", "max ms",
                "last watcher p50 ms", "RSS before MiB", "RSS with watches MiB", "peak MiB", "KiB per watch"], [
            [_name(results, key), w["watchers"], w["establish_s"], w["deliveries"], w["missing"], w["p50_ms"],
             w["p99_ms"], w["max_ms"], w["all_delivered_p50_ms"], w.get("rss_before_mib", "-"),
             w.get("rss_watching_mib", "-"), w.get("rss_peak_mib", "-"), w.get("rss_per_watch_kib", "-")]
            for key, w in results["watch"].items()
        ]),
        "",
        "## 3. Exec stdout throughput",
        "",
        f"`cat` of a {p['exec_bytes'] // MIB} MiB file in the pod sandbox over `v5.channel.k8s.io` "
        "(aiohttp WebSocket client; from connect to the exit status), once with random bytes (what "
        "`kubectl cp` moves: a tar stream) and once with log-like text; the best of "
        f"{p['exec_runs']} runs. MB = 10^6 bytes.",
        "",
        _table(["path", "payload", "bytes", "seconds", "MB/s", "MB/s of each run", "exit"], [
            [_name(results, key), payload, e["bytes"], e["seconds"], e["mb_s"],
             " / ".join(str(v) for v in e.get("mb_s_runs", [e["mb_s"]])), e["status"]]
            for payload, runs in results["exec"].items() for key, e in runs.items()
        ]),
        "",
        "The same with the real `kubectl exec ... -- cat` of the text file (wall clock, including kubectl's start-up):",
        "",
        _table(["path", "bytes", "seconds", "MB/s"], [
            [_name(results, key), e["bytes"], e["seconds"], e["mb_s"]] for key, e in results["kubectl_exec"].items()
        ]),
        "",
        "## 4. Servers: uvicorn vs daphne",
        "",
        _table(["server", f"req/s @{low}", f"p50 ms @{low}", f"req/s @{high}", f"p99 ms @{high}",
                "exec MB/s (binary / text)", "watch p99 ms", "watch peak RSS MiB", "idle RSS MiB"], [
            [_name(results, key), f"{results['small_get'][key][low]['rps']:.0f}",
             f"{results['small_get'][key][low]['p50_ms']:.2f}", f"{results['small_get'][key][high]['rps']:.0f}",
             f"{results['small_get'][key][high]['p99_ms']:.2f}",
             " / ".join(str(runs[key]["mb_s"]) for runs in results["exec"].values()),
             results["watch"][key]["p99_ms"], results["watch"][key].get("rss_peak_mib"),
             results["idle_rss_mib"][key]]
            for key in SERVERS
        ]),
        "",
        f"Back-pressure: a client reads a {results['log_bytes'] // MIB} MiB pod log (`GET .../pods/bench-exec/log`) "
        "at about 160 KB/s (16 KiB every 100 ms, 16 KiB receive buffer) while the gateway's RSS is sampled; "
        "the last column is read a moment after the client went away.",
        "",
        _table(["server", "seconds", "read by client MiB", "RSS before MiB", "peak in first quarter MiB",
                "peak MiB", "growth MiB", "after close MiB"], [
            [_name(results, key), s["seconds"], s["received_mib"], s["rss_before_mib"],
             s["rss_peak_after_quarter_mib"], s["rss_peak_mib"], s["rss_growth_mib"], s["rss_after_close_mib"]]
            for key, s in results["slow_reader"].items()
        ]),
        "",
        "## 5. Upstream HTTP client",
        "",
        _table(["gateway", f"req/s @{low}", f"p50 ms @{low}", f"req/s @{high}", f"p50 ms @{high}",
                f"p99 ms @{high}", "watch p50 ms", "watch p99 ms", "watch peak RSS MiB"], [
            [_name(results, key), f"{results['small_get'][key][low]['rps']:.0f}",
             f"{results['small_get'][key][low]['p50_ms']:.2f}", f"{results['small_get'][key][high]['rps']:.0f}",
             f"{results['small_get'][key][high]['p50_ms']:.2f}", f"{results['small_get'][key][high]['p99_ms']:.2f}",
             results["watch"][key]["p50_ms"], results["watch"][key]["p99_ms"],
             results["watch"][key].get("rss_peak_mib")]
            for key in ("uvicorn", "uvicorn-alt")
        ]),
        "",
        "## 6. Masking",
        "",
        _masking_section(results["masking"]),
        "",
        *(["## 6b. CPU per small GET against rules and connections", "",
            hotpath.render_scaling(results["hotpath_scaling"]), ""] if "hotpath_scaling" in results else []),
        "## 6c. Masking and the exec stream path, per byte (bench/stream_masking.py)",
        "",
        stream_masking.table(results["stream_masking"]) if "stream_masking" in results else "not measured",
        "",
        *([audit_writers.table(results["audit_writers"]), ""] if "audit_writers" in results else []),
        "## Errors logged by the gateways during the run",
        "",
        _errors_section(results["gateway_errors"]),
        "",
    ]
    if results.get("watch_memory"):
        parts += ["## Scaling", "", watch_memory.render(results["watch_memory"])]
    if soak is not None:
        parts += [_soak_section(soak), ""]
    if scaleout:  # rendered by bench/scaleout.py
        parts += [scaleout.rstrip("\n"), ""]
    return "\n".join(parts)


def _counts(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "-"


def _slowest(slowest: dict) -> str:
    """The longest wait for an answer but a held delete's (it waits for its approval), and its kind."""
    waits = {kind: seconds for kind, seconds in slowest.items() if kind != "hold"}
    if not waits:
        return "-"
    kind, seconds = max(waits.items(), key=lambda item: item[1])
    return f"{seconds:.2f} ({kind})"


def _lost(phase: dict) -> str:
    lost = phase["events_lost"]
    return f"{sum(lost.values())}" + ("" if not sum(lost.values()) else f" ({_counts({k: v for k, v in lost.items() if v})})")


def _extra(phase: dict) -> str:
    notes = []
    if "restart_s" in phase:
        notes.append(f"restarted in {phase['restart_s']:.1f} s")
    if "drain_s" in phase:
        notes.append(f"exited {phase['drain_s']:.1f} s after SIGTERM (status {phase['exit_code']}); "
                     f"{phase['watches_ended_with_error_event']} of {phase['watches_open']} open watches ended "
                     "with an ERROR event and a clean end")
    if phase.get("closed_as_crashed"):
        notes.append(f"{phase['closed_as_crashed']} closed as GatewayCrashed from the journal")
    return "; ".join(notes)


def _soak_section(soak: dict) -> str:
    p = soak["profile"]
    phases = soak["phases"]
    fuzz = soak["fuzz"]
    changed = ", ".join(f"`{k}={v}`" for k, v in soak["settings"].items())
    lines = [
        "## 7. Resilience (`make soak`)",
        "",
        f"Generated by `python -m bench.soak` (`make soak`) on {soak['started']}, profile `{p['name']}`, "
        f"{soak['elapsed_s']} s in total, code at commit {soak['source']['commit']}"
        + (f" plus {soak['source']['uncommitted_files']} uncommitted files" if soak["source"]["uncommitted_files"]
           else "")
        + "; raw figures in bench/soak.json. Two gateway processes, started as docker-compose.yml starts them, "
        "share one PostgreSQL database, one Redis and one kubesim, each reached through a TCP proxy on loopback "
        "(tests/resilience_rig.py). Each phase has its own load (tests/resilience_load.py): "
        f"{p['clients']} clients (each in turn: list, create, get, list, delete a ConfigMap it created, a request "
        f"without a token), {p['watches']} watches and {p['holds']} held deletes approved through the other "
        f"gateway; a client waits at most {p['client_timeout']:g} s for an answer. Each fault lasts "
        f"{p['fault_seconds']:g} s with {p['settle_seconds']:g} s of load before and after it. Settings that "
        f"differ from production: {changed}; the Connections' connect, first-byte and idle timeouts are "
        f"{p['timeouts'][0]:g}, {p['timeouts'][1]:g} and {p['timeouts'][2]:g} s. Partitioned: the proxy "
        "forwards nothing and new connections get no answer; refused: connections reset and refused; "
        "database frozen: another session holds an exclusive lock on the tables the gateway reads and "
        "appends to; cluster frozen: kubesim stopped with SIGSTOP.",
        "",
        "Slowest answer: the longest wait for an answer, held deletes aside (they wait for their approval). "
        "Recovery: seconds from the end of the fault (for the kill and the stop: from the restart) until every "
        "gateway answered a write and a database lookup (database and Redis faults) or a read from the cluster, "
        "the probes' own answers under load included. "
        "Problems: a 500, an error that is not a Kubernetes `Status`, an answer other than the expected one "
        "outside the fault, a watch cut instead of ended, a request without an answer (a hang) except on the "
        "gateway killed or stopped. Events lost: answered requests without exactly one completion event of the "
        "status they got, requests kubesim received without an audit event, `RequestReceived` without a "
        "completion.",
        "",
        _table(["phase", "requests", "answers by status", "slowest answer s", "recovery s", "problems",
                "events lost", "notes"], [
            [ph["phase"], ph["requests"], _counts(ph["by_status"]), _slowest(ph["slowest_s"]),
             "-" if ph.get("recovery_s") is None else f"{ph['recovery_s']:.2f}", ph["problem_count"], _lost(ph),
             _extra(ph)]
            for ph in phases
        ]),
        "",
        f"Fuzz (tests/resilience_fuzz.py, seeds {', '.join(str(s) for s in fuzz['seeds'])}): {fuzz['cases']} cases "
        f"({_counts(fuzz['by_family'])}), answers {_counts(fuzz['answers'])}, slowest {fuzz['slowest_s']:.2f} s, "
        f"{fuzz['problem_count']} problems.",
        "",
        f"`verify_audit` after the run: exit {soak['verify_audit']['returncode']}: "
        f"{soak['verify_audit']['output'].splitlines()[-1] if soak['verify_audit']['output'] else ''}",
        "",
        "Tracebacks in the gateways' logs: " + "; ".join(
            f"{name}: {errors['tracebacks']}" + (f" ({'; '.join(f'`{e}`' for e in errors['exceptions'])})"
                                                  if errors["exceptions"] else "")
            for name, errors in soak["gateway_errors"].items()),
    ]
    listed = [(ph["phase"], problem) for ph in phases for problem in ph["problems"]]
    listed += [("fuzz", problem) for problem in fuzz["problems"]]
    if listed:
        lines += ["", "Problems (at most 10 per phase):", ""]
        lines += [f"- {phase}: `{problem[:300]}`" for phase, problem in listed]
    return "\n".join(lines)


def soak_summary(soak: dict) -> str:
    lines = [f"soak finished in {soak['elapsed_s']} s ({soak['profile']['name']} profile)"]
    for ph in soak["phases"]:
        lines.append(f"  {ph['phase']}: {ph['requests']} requests, recovery {ph.get('recovery_s', '-')} s, "
                     f"{ph['problem_count']} problems, {sum(ph['events_lost'].values())} events lost")
    lines.append(f"  fuzz: {soak['fuzz']['cases']} cases, {soak['fuzz']['problem_count']} problems")
    lines.append(f"  verify_audit: exit {soak['verify_audit']['returncode']}")
    return "\n".join(lines)


def load_soak(bench_dir: Path) -> dict | None:
    """The last ``make soak`` figures (bench/soak.json), rendered with the bench's; None before the first."""
    path = bench_dir / "soak.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_scaleout(bench_dir: Path) -> str | None:
    """The last scale-out section (bench/scaleout.json, written by bench/scaleout.py); None before the first."""
    path = bench_dir / "scaleout.json"
    return json.loads(path.read_text()).get("section") if path.exists() else None


def _masking_section(masking: dict) -> str:
    if masking["status"] != "ok":
        return f"{masking['status']}: {masking['note']}"
    return "From `bench.bench_masking.run()`:\n\n```json\n" + json.dumps(masking["results"], indent=2) + "\n```"


def _errors_section(errors: dict) -> str:
    lines = []
    for name, found in errors.items():
        lines.append(f"- {name}: " + ("none" if not found else "; ".join(f"`{line.strip()[:160]}`" for line in found)))
    return "\n".join(lines)


def summary(results: dict) -> str:
    lines = [f"bench finished in {results['elapsed_s']} s ({results['profile']['name']} profile)"]
    for target in results["targets"]:
        lines.append(f"  {_met(target['met']):>6}  {target['target']}: {target['measured']}")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Re-render RESULTS.md from a results.json (e.g. after editing bench/analysis.md) without re-running."""
    import argparse

    bench_dir = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=bench_dir / "results.json")
    parser.add_argument("--out", type=Path, default=bench_dir / "RESULTS.md")
    args = parser.parse_args(argv)
    args.out.write_text(render(json.loads(args.results.read_text()), analysis=bench_dir / "analysis.md",
                               soak=load_soak(bench_dir), scaleout=load_scaleout(bench_dir)))


if __name__ == "__main__":
    main()
