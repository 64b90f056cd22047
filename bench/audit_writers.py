"""``python -m bench.audit_writers``: audit appends per second against the number of writers on one
PostgreSQL chain, and what the serving processes pay for them.

A *writer* is one pod's audit writer process (``manage.py audit_writer``, audit.writer: every
gateway process of the pod sends it its events over a Unix socket and it appends them in batches)
with one serving process feeding it: a process of its own running the gateway's recorder
(``audit.recorder.Recorder``, ``AIRLOCK_AUDIT_WRITER=process``), as three gateway replicas have
three writers on one database.  Ways of recording, as the gateway has them:

* ``completions``: ``Recorder.finish`` (every request's completion event), the queue kept full;
* ``begins``: ``Recorder.begin`` (a write's ``RequestReceived``, committed before it is forwarded),
  ``--in-flight`` requests waiting at a time in each serving process (the writer commits what has
  arrived from all of them in one transaction);
* ``thread``: completions as before the writer process, each serving process appending them
  itself on a thread (``AIRLOCK_AUDIT_WRITER=thread``), for comparison (full profile only).

Every append takes the chain lock (``pg_advisory_xact_lock``, audit.chain.lock_chain) for the
numbering, hashing, COPY and commit only (rows and documents are prepared before); each writer
times, per transaction, its wait for the lock and how long it held it.  ``lock busy`` is the sum of
every writer's held time over the wall time: near 1.0 the chain lock is what limits appends.  CPU is
per event, from each process's own CPU time: the serving process's is what recording costs a
request.  Loopback only; PostgreSQL as for the soak (tests/resilience_rig.postgres_url), a database
of its own, dropped afterwards.  On a shared machine the figures are indicative.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FULL_CELLS = [("completions", n) for n in (1, 2, 3)] + [("begins", n) for n in (1, 2, 3)] + [
    ("thread", n) for n in (1, 3)]
QUICK_CELLS = [("completions", 1)]


def _event(marker: str, stage: str) -> dict:
    from django.utils import timezone

    now = timezone.now()
    return {
        "audit_id": uuid.uuid4(), "stage": stage, "request_received_timestamp": now, "stage_timestamp": now,
        "user_username": "bench-agent", "user_uid": "bench-agent", "user_issuer": "https://idp.bench.test",
        "user_groups": ["agents"], "verb": "create" if stage == "RequestReceived" else "list",
        "object_resource": "configmaps", "object_namespace": "default", "object_api_version": "v1",
        "request_uri": "/api/v1/namespaces/default/configmaps", "source_ips": ["127.0.0.1"],
        "user_agent": marker, "response_code": 200, "connection": "bench", "decision_effect": "allow",
        "decision_reason": 'rule "bench" allows', "latency_ms": 1.0, "bytes_in": 0, "bytes_out": 512,
        "response_body": b'{"kind":"ConfigMapList","items":[]}',
    }


def _timed_chain(waits: list, helds: list, backend: dict | None = None) -> None:
    """Time every append's wait for the chain lock and how long it then held it (until the writer saw
    its commit: an upper bound), and note the CPU time of the database backend serving the appends
    (``backend``: pid -> CPU seconds so far)."""
    from django.db import connection

    from audit import chain
    from bench.procs import cpu_seconds

    lock, append = chain.lock_chain, chain.append
    state = {}

    def timed_lock(*args):
        started = time.perf_counter()
        lock(*args)
        state["locked"] = time.perf_counter()
        waits.append(state["locked"] - started)

    def timed_append(*args, **kwargs):
        state.pop("locked", None)
        try:
            return append(*args, **kwargs)
        finally:
            if "locked" in state:
                helds.append(time.perf_counter() - state.pop("locked"))
            if backend is not None and connection.connection is not None:
                pid = connection.connection.info.backend_pid
                try:
                    backend.setdefault(pid, [cpu_seconds(pid), 0.0])[1] = cpu_seconds(pid)
                except OSError:  # a server on another machine: not measured
                    pass

    chain.lock_chain, chain.append = timed_lock, timed_append


async def _writer_child(journal: Path) -> dict:
    from audit.writer import AuditWriter

    waits, helds, backend = [], [], {}
    _timed_chain(waits, helds, backend)
    writer = AuditWriter(journal_dir=journal, recover_seconds=3600)
    cpu = time.process_time()
    await writer.serve()
    return {"transactions": len(helds), "events": writer.stats.events, "lock_wait_s": sum(waits),
            "held_s": sum(helds), "cpu_s": time.process_time() - cpu,
            "database_cpu_s": sum(last - first for first, last in backend.values())}


async def _feeder_child(mode: str, seconds: float, start_at: float, marker: str, in_flight: int,
                        journal: Path) -> dict:
    from audit.recorder import Recorder

    waits, helds, backend = [], [], {}
    if mode == "thread":
        _timed_chain(waits, helds, backend)
    recorder = Recorder(journal_dir=journal, sync_interval=0.2, writer="thread" if mode == "thread" else "process",
                        spawn_writer=False)
    await recorder.start()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + seconds
    sent = 0

    async def loop():
        nonlocal sent
        while time.monotonic() < deadline:
            if mode == "begins":
                await recorder.begin(_event(marker, "RequestReceived"))
            else:
                await recorder.finish(_event(marker, "ResponseComplete"))
            sent += 1

    began, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(loop() for _ in range(in_flight if mode == "begins" else 1)))
    await recorder.flush()
    elapsed, cpu = time.monotonic() - began, time.process_time() - cpu
    await recorder.aclose()
    return {"events": sent, "seconds": elapsed, "cpu_s": cpu, "transactions": len(helds),
            "lock_wait_s": sum(waits), "held_s": sum(helds),
            "database_cpu_s": sum(last - first for first, last in backend.values())}


def _spawn(env: dict, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.audit_writers", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"a bench process failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _run_cell(url: str, mode: str, writers: int, seconds: float, in_flight: int, workdir: Path,
              setup: float = 4.0) -> dict:
    from bench.procs import machine_busy_seconds
    from tests.resilience_rig import base_env

    env = base_env(DATABASE_URL=url, AIRLOCK_DEBUG="false")  # as in production: no query log
    marker = f"bench-writers/{mode}/{writers}/{uuid.uuid4().hex[:6]}"
    journals = [Path(tempfile.mkdtemp(prefix="aw-", dir=workdir)) for _ in range(writers)]
    writer_procs = [] if mode == "thread" else [_spawn(env, "--writer-child", "--journal", str(j)) for j in journals]
    try:
        deadline = time.monotonic() + 60
        while not all((j / "writer.sock").exists() for j in journals) and mode != "thread":
            if any(p.poll() is not None for p in writer_procs) or time.monotonic() > deadline:
                raise RuntimeError(f"a writer did not start:\n{writer_procs[0].communicate()[1][-3000:]}")
            time.sleep(0.05)
        start_at = time.time() + setup  # every feeder set up (Django, its connection) before the clock starts
        feeders = [_spawn(env, "--feeder-child", mode, "--seconds", str(seconds), "--start-at", str(start_at),
                          "--marker", marker, "--in-flight", str(in_flight), "--journal", str(j)) for j in journals]
        time.sleep(max(0.0, start_at - time.time()))
        busy = machine_busy_seconds()
        fed = [_result(proc, seconds + 120) for proc in feeders]
        busy = machine_busy_seconds() - busy
    finally:
        for proc in writer_procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    wrote = [_result(proc, 60) for proc in writer_procs] or fed
    wall = max(r["seconds"] for r in fed)
    events = sum(r["events"] for r in fed)
    # Everything else the machine ran meanwhile (other processes, not this cell's): a shared machine shows here.
    own = sum(r["cpu_s"] for r in fed) + sum(r["cpu_s"] + r["database_cpu_s"] for r in wrote if writer_procs) + (
        sum(r["database_cpu_s"] for r in fed) if not writer_procs else 0.0)
    transactions = sum(r["transactions"] for r in wrote)
    held = sum(r["held_s"] for r in wrote)
    per_event = lambda s: round(s / events * 1e6, 1) if events else 0  # noqa: E731
    return {
        "mode": mode, "writers": writers, "seconds": round(wall, 2), "events": events,
        "events_per_s": round(events / wall), "transactions_per_s": round(transactions / wall),
        "events_per_transaction": round(events / transactions, 1) if transactions else 0,
        "held_ms_per_transaction": round(held / transactions * 1000, 2) if transactions else 0,
        "lock_wait_ms_per_transaction": round(sum(r["lock_wait_s"] for r in wrote) / transactions * 1000, 2)
        if transactions else 0,
        "lock_busy": round(held / wall, 2),
        "serving_cpu_us_per_event": per_event(sum(r["cpu_s"] for r in fed)),
        "writer_cpu_us_per_event": per_event(sum(r["cpu_s"] for r in wrote)) if writer_procs else None,
        "database_cpu_us_per_event": per_event(sum(r["database_cpu_s"] for r in wrote)),
        "other_cpu_cores": round(max(0.0, busy - own) / wall, 2),
    }


def measure(profile=None, *, url: str | None = None, cells=None, seconds: float | None = None,
            in_flight: int = 64) -> dict:
    """Every (mode, writers) cell on a fresh database of the PostgreSQL server at ``url`` (default: the
    soak's), with the server's durability settings; ``profile`` (bench.run's FULL or QUICK) picks the cells
    and their length unless given.  Returns plain data for :func:`table`; ``{"skipped": why}`` without a server."""
    import psycopg

    from tests.resilience_rig import Postgres, manage, postgres_url

    quick = getattr(profile, "name", "full") == "quick"
    cells = cells or (QUICK_CELLS if quick else FULL_CELLS)
    seconds = seconds or (1.0 if quick else 6.0)
    url = url or postgres_url()
    postgres = Postgres(url)
    try:
        psycopg.connect(postgres.url("postgres"), connect_timeout=3).close()
    except psycopg.Error as exc:
        return {"skipped": f"no PostgreSQL at {postgres.host}:{postgres.port} ({type(exc).__name__})"}
    database = f"{postgres.config['NAME']}_writers_{os.getpid()}"
    postgres.admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    postgres.admin(f'CREATE DATABASE "{database}"')
    try:
        manage({"DATABASE_URL": postgres.url(database)}, "migrate", "--no-input")
        with psycopg.connect(postgres.url(database), connect_timeout=5) as db:
            server = {name: db.execute(f"SHOW {name}").fetchone()[0]
                      for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")}
        results = []
        with tempfile.TemporaryDirectory(prefix="aw-", dir="/tmp") as tmp:
            for mode, writers in cells:
                cell = _run_cell(postgres.url(database), mode, writers, seconds, in_flight, Path(tmp),
                                 setup=2.0 if quick else 4.0)
                print(json.dumps(cell), file=sys.stderr, flush=True)
                results.append(cell)
        verify = subprocess.run([sys.executable, "manage.py", "verify_audit"], cwd=REPO, capture_output=True,
                                text=True, env={**os.environ, "DATABASE_URL": postgres.url(database),
                                                "PYTHONPATH": str(REPO)}, timeout=600)
    finally:
        postgres.drop(database)
    return {"postgres": server, "seconds": seconds, "in_flight": in_flight, "cells": results,
            "verify_audit": verify.returncode}


MODES = {
    "completions": "completions (`finish`), writer process",
    "begins": "writes' `RequestReceived` (`begin`, {in_flight} in flight per serving process), writer process",
    "thread": "completions, a writer thread in each serving process (before the writer process)",
}


def table(result: dict) -> str:
    """The scaling table: audit appends per second against the number of writers on PostgreSQL."""
    title = "### Audit appends per second against the number of writers (PostgreSQL)"
    if "skipped" in result:
        return f"{title}\n\nNot measured: {result['skipped']}.\n"
    server = result["postgres"]
    lines = [
        title, "",
        f"PostgreSQL {server['server_version'].split()[0]} (fsync {server['fsync']}, synchronous_commit "
        f"{server['synchronous_commit']}); {result['seconds']:g} s per cell; one serving process per writer; "
        f"`verify_audit` after the run: exit {result['verify_audit']}. Indicative on a shared machine.", "",
        "| events | writers | appends/s | events/transaction | lock held ms/transaction | lock busy "
        "| CPU µs/event: serving | writer | database | other load (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell in result["cells"]:
        writer_cpu = cell["writer_cpu_us_per_event"]
        lines.append(
            f"| {MODES[cell['mode']].format(in_flight=result['in_flight'])} | {cell['writers']} "
            f"| {cell['events_per_s']:,} | {cell['events_per_transaction']} | {cell['held_ms_per_transaction']} "
            f"| {cell['lock_busy']} | {cell['serving_cpu_us_per_event']} "
            f"| {'-' if writer_cpu is None else writer_cpu} | {cell['database_cpu_us_per_event']} "
            f"| {cell['other_cpu_cores']} |")
    lines += ["", "Lock held is until the writer saw its commit, an upper bound (a busy machine delays the "
              "writer's thread after the server released the lock); lock busy near 1.0 would mean the chain lock "
              "limits appends. CPU per event, from each process's own CPU time (the database: the backends "
              "serving the appends): their sum bounds appends per second on this machine's cores."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_writers", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per cell (default 6)")
    parser.add_argument("--in-flight", type=int, default=64, help="begins: begin() calls waiting per process")
    parser.add_argument("--cells", help="comma-separated mode:writers, e.g. completions:3,begins:1 (default: all)")
    parser.add_argument("--writer-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--feeder-child", choices=tuple(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--marker", help=argparse.SUPPRESS)
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer_child or args.feeder_child:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airlock.settings")
        django.setup()
        if args.writer_child:
            result = asyncio.run(_writer_child(args.journal))
        else:
            result = asyncio.run(_feeder_child(args.feeder_child, args.seconds, args.start_at, args.marker,
                                               args.in_flight, args.journal))
        print(json.dumps(result))
        return
    cells = None
    if args.cells:
        cells = [(mode, int(n)) for mode, n in (item.split(":") for item in args.cells.split(","))]
    result = measure(cells=cells, seconds=args.seconds, in_flight=args.in_flight)
    print(json.dumps(result, indent=2))
    print(table(result), file=sys.stderr)


if __name__ == "__main__":
    main()
