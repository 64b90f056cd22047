"""Where the gateway's CPU per small GET goes, from a sampling profile taken inside ``make bench``.

The targets table says how much CPU a small GET costs; this says on what, so that the analysis of a
missed target rests on a profile of the same run, not on one taken by hand another day.  After the
small-GET cells, one more wrk run per connection count goes to the production gateway while py-spy
samples every one of its processes (``--nonblocking``: the processes are never stopped, so the CPU
measured from /proc during the run is what they use unprofiled, give or take the machine's noise).

Each sample is charged to the stage of its deepest frame that belongs to one (:data:`STAGES`, by
the frame's module): a Secret value found by masking code called from the forwarder is masking,
not forwarding.  Samples with no such frame are the event loop's own work (uvloop's C code: epoll,
the socket reads and writes it makes itself, its TLS transport between calls into the ssl module;
asyncio), or other Python.  A process is a serving worker, the audit writer or uvicorn's
supervisor (by its command line); a stage's share of its process's samples times that process's
CPU per request gives microseconds per GET.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time
from pathlib import Path

from bench import procs

EVENT_LOOP = "event loop: uvloop's own C code (epoll, the socket reads and writes it makes), asyncio"
OTHER = "other Python (Django, logging, the standard library)"
# (stage, pattern on a py-spy frame "function (path:line)"): the deepest frame that matches decides.
STAGES = (
    ("TLS records (ssl module: agent and cluster sides)", r"\(ssl\.py:"),
    ("HTTP server: uvicorn, airlock/server.py (incl. its TLS writes to the agent)", r"\((uvicorn/|airlock/server\.py)"),
    ("cluster client: gateway/http1.py, upstream.py (incl. its TLS writes)", r"\(gateway/(http1|upstream)\.py"),
    ("masking (masking/)", r"\(masking/"),
    ("authentication (identity/, gateway/authn.py)", r"\((identity/|gateway/authn\.py)"),
    ("authorization (policy/, gateway/authz.py, approvals/)", r"\((policy/|gateway/authz\.py|approvals/)"),
    ("metrics (prometheus_client, */metrics.py)", r"\((prometheus_client/|[a-z_]+/metrics\.py)"),
    ("parse and headers (gateway/pipeline.py, kube/)", r"\((gateway/pipeline\.py|kube/)"),
    ("the other gateway stages (gateway/: app, exchange, hooks, responses)", r"\(gateway/"),
    ("database: psycopg, Django's ORM", r"\((psycopg/|django/db/)"),
    ("audit chain: canonical JSON, hashes, rows (audit/chain.py, document.py)", r"\(audit/(chain|document)\.py"),
    ("audit hand-over: records, journal, channel, writer loop (audit/)", r"\(audit/"),
    ("connections and caches (connections/, runtime/)", r"\((connections/|runtime/)"),
    (EVENT_LOOP, r"\((asyncio/|uvloop/)|^thread \(|^Runner\.run "),
)
_COMPILED = [(stage, re.compile(pattern)) for stage, pattern in STAGES]


def stage_of(frames: list[str]) -> str:
    """The stage of one sample's stack (root first, as py-spy's raw format lists it): its deepest frame
    of a stage among those the event loop runs (the server's and the writer's own start-up frames are
    under every sample); the event loop's only when no frame is any other stage's (the channel's socket
    write in asyncio's StreamWriter is the audit hand-over's)."""
    for at in range(len(frames) - 1, -1, -1):  # what the event loop runs, not the server that started it
        if frames[at].startswith("Runner.run ("):
            frames = frames[at + 1:]
            if not frames:
                return EVENT_LOOP  # uvloop's own work (epoll, its transports): no Python frame above it
            break
    loop = False
    for frame in reversed(frames):
        for stage, pattern in _COMPILED:
            if pattern.search(frame):
                if stage != EVENT_LOOP:
                    return stage
                loop = True
    return EVENT_LOOP if loop else OTHER


def stages(raw: str) -> tuple[int, collections.Counter]:
    """(samples, samples per stage) of py-spy's raw output (``stack count`` lines, frames ``;``-separated)."""
    counts, total = collections.Counter(), 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # py-spy --threads puts "thread (id): name" first: the stage comes from the frames under it.
        counts[stage_of(frames[1:] if frames[0].startswith("thread (") else frames)] += int(count)
        total += int(count)
    return total, counts


def role(pid: int) -> str:
    """worker, writer or supervisor, from the process's command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    text = b" ".join(argv)
    if b"audit_writer" in text:
        return "writer"
    if b"spawn_main" in text:  # uvicorn --workers: multiprocessing's spawned children
        return "worker"
    return "supervisor"  # uvicorn's, and multiprocessing's resource tracker


def measure(wrk, target, path: str, connections: tuple[int, ...], seconds: int, workdir: Path) -> dict:
    """One profiled wrk run per connection count on ``target`` (bench.run.Target of a started gateway)."""
    if not (Path(sys.executable).parent / "py-spy").exists():
        return {"unavailable": "py-spy is not installed (requirements-dev.txt)"}
    return {str(c): _cell(wrk, target, path, c, seconds, workdir / f"cpu-profile-{c}") for c in connections}


def record(pids: list[int], seconds: int, out: Path, native: bool = False) -> dict[int, subprocess.Popen]:
    """py-spy recording each process for ``seconds`` into ``out/<pid>.txt`` (raw collapsed stacks, every
    thread), attached once this returns.  ``native``: C frames too, which stops the process at each sample;
    otherwise ``--nonblocking``, which never does."""
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    recorders = {pid: subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration", str(seconds),
                                        "--rate", "250", "--format", "raw", "--threads",
                                        "--native" if native else "--nonblocking", "--output", str(out / f"{pid}.txt")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for pid in pids}
    time.sleep(1)  # attached before the load starts
    return recorders


def _cell(wrk, target, path: str, connections: int, seconds: int, out: Path) -> dict:
    pids = target.service.pids()
    recorders = record(pids, seconds + 2, out)
    before = {pid: procs._sum_alive(procs.cpu_seconds, [pid]) for pid in pids}
    result = wrk.run(target.base_url + path, target.token, connections, seconds)
    used = {pid: procs._sum_alive(procs.cpu_seconds, [pid]) - before[pid] for pid in pids}
    requests = max(result.requests, 1)
    roles: dict[str, dict] = {}
    failures = []
    for pid, recorder in recorders.items():
        _, err = recorder.communicate(timeout=seconds + 60)
        raw = out / f"{pid}.txt"
        name = role(pid)
        entry = roles.setdefault(name, {"processes": 0, "us_per_request": 0.0, "samples": 0,
                                        "stage_samples": collections.Counter()})
        entry["processes"] += 1
        entry["us_per_request"] += used[pid] * 1e6 / requests
        if not raw.exists():
            if used[pid] * 1e6 / requests >= 5:  # a process that worked but left no profile
                failures.append(f"{name} {pid}: {err.strip()[-200:] or 'no output'}")
            continue
        total, counts = stages(raw.read_text())
        entry["samples"] += total
        entry["stage_samples"].update(counts)
    for entry in roles.values():
        counts = entry.pop("stage_samples")
        entry["us_per_request"] = round(entry["us_per_request"], 1)
        entry["stages"] = {stage: round(n / entry["samples"], 4) for stage, n in counts.most_common()} \
            if entry["samples"] else {}
    return {"connections": connections, "requests": result.requests, "rps": result.rps,
            "errors": result.errors, "roles": roles, "failures": failures}


def render(profile: dict) -> str:
    """Microseconds per GET per stage, for the serving workers and the audit writer, at each connection count."""
    if "unavailable" in profile:
        return f"Not measured: {profile['unavailable']}."
    counts = list(profile)
    lines = []
    for name in ("worker", "writer"):
        cells = {c: profile[c]["roles"].get(name) for c in counts}
        if not any(cells.values()):
            continue
        order = []
        for cell in cells.values():
            for stage in (cell or {}).get("stages", {}):
                if stage not in order:
                    order.append(stage)
        heading = "serving workers (all of them)" if name == "worker" else "audit writer process"
        lines += [f"| {heading} | " + " | ".join(f"{c} conn. µs/GET (share)" for c in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        for stage in order:
            row = []
            for c in counts:
                cell = cells[c]
                share = (cell or {}).get("stages", {}).get(stage, 0.0)
                row.append(f"{share * cell['us_per_request']:.0f} ({share:.0%})" if cell else "-")
            lines.append(f"| {stage} | " + " | ".join(row) + " |")
        lines.append("| **all of it** (CPU per GET from /proc; py-spy samples) | " + " | ".join(
            f"**{cells[c]['us_per_request']:.0f}** ({cells[c]['samples']} samples)" if cells[c] else "-"
            for c in counts) + " |")
        lines.append("")
    failures = [f for c in counts for f in profile[c].get("failures", [])]
    if failures:
        lines.append("Processes py-spy could not sample: " + "; ".join(failures) + ".")
    return "\n".join(lines).rstrip()
