"""``python -m bench.audit_writers``: audit appends per second with several writer processes on one
PostgreSQL chain, and how much of that the chain lock decides.

Each writer is a process of its own with the gateway's recorder (``audit.recorder.Recorder``, its
journal in a directory of its own), appending to one chain in one database, as three gateway
replicas do.  Two ways of recording, as the gateway has them:

* ``batched``: ``Recorder.finish`` (completion events): queued and written ``AIRLOCK_AUDIT_BATCH_SIZE``
  per transaction by the recorder's writer thread, the queue kept full;
* ``single``: ``Recorder.begin`` (a write's ``RequestReceived``, committed before it is forwarded):
  one transaction per event, ``--in-flight`` of them waiting at a time in each process.

Every append takes the chain lock (``pg_advisory_xact_lock``, audit.chain.lock_chain), reads the
head, inserts and commits; the lock is released by the commit, so it is held through the commit's
WAL flush.  Each writer times, per transaction, its wait for the lock and the whole append;
``held`` is their difference (the serial part).  ``lock_busy`` is the sum of every writer's held
time over the wall time: near 1.0, the chain lock is what limits appends, and transactions per
second cannot exceed 1 / (mean held time).  Loopback only; PostgreSQL as for the soak
(tests/resilience_rig.postgres_url), a database of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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


async def _child(mode: str, seconds: float, start_at: float, marker: str, in_flight: int, journal: Path) -> dict:
    from audit import chain
    from audit.recorder import Recorder

    waits, appends = [], []
    lock, append = chain.lock_chain, chain.append

    def timed_lock():
        started = time.perf_counter()
        lock()
        waits.append(time.perf_counter() - started)

    def timed_append(*args, **kwargs):
        started = time.perf_counter()
        try:
            return append(*args, **kwargs)
        finally:
            appends.append(time.perf_counter() - started)

    chain.lock_chain, chain.append = timed_lock, timed_append
    recorder = Recorder(journal_dir=journal, sync_interval=1.0)
    await recorder.start()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + seconds
    sent = 0

    async def loop():
        nonlocal sent
        while time.monotonic() < deadline:
            if mode == "batched":
                await recorder.finish(_event(marker, "ResponseComplete"))
            else:
                await recorder.begin(_event(marker, "RequestReceived"))
            sent += 1

    began = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(1 if mode == "batched" else in_flight)))
    await recorder.flush()
    elapsed = time.monotonic() - began
    await recorder.aclose()
    held = [a - w for a, w in zip(appends, waits)]
    return {"events": sent, "seconds": elapsed, "transactions": len(appends), "lock_wait_s": sum(waits),
            "append_s": sum(appends), "held_s": sum(held), "held_p50_ms": statistics.median(held) * 1000 if held else 0}


def _run_cell(url: str, mode: str, writers: int, seconds: float, in_flight: int, workdir: Path) -> dict:
    from tests.resilience_rig import base_env

    marker = f"bench-writers/{mode}/{writers}/{uuid.uuid4().hex[:6]}"
    start_at = time.time() + 4.0  # every writer set up (Django, connection) before the clock starts
    procs = []
    for n in range(writers):
        journal = workdir / f"{marker.replace('/', '-')}-{n}"
        argv = [sys.executable, "-m", "bench.audit_writers", "--child", mode, "--seconds", str(seconds),
                "--start-at", str(start_at), "--marker", marker, "--in-flight", str(in_flight),
                "--journal", str(journal)]
        procs.append(subprocess.Popen(argv, cwd=REPO, env=base_env(DATABASE_URL=url), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"a writer failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["seconds"] for r in results)
    events = sum(r["events"] for r in results)
    transactions = sum(r["transactions"] for r in results)
    held = sum(r["held_s"] for r in results)
    return {
        "mode": mode, "writers": writers, "seconds": round(wall, 2), "events": events,
        "events_per_s": round(events / wall), "transactions_per_s": round(transactions / wall),
        "events_per_transaction": round(events / transactions, 1) if transactions else 0,
        "held_ms_per_transaction": round(held / transactions * 1000, 2) if transactions else 0,
        "lock_wait_ms_per_transaction": round(sum(r["lock_wait_s"] for r in results) / transactions * 1000, 2)
        if transactions else 0,
        "lock_busy": round(held / wall, 2),
        "ceiling_transactions_per_s": round(transactions / held) if held else 0,
    }


def run(url: str, *, seconds: float = 10.0, in_flight: int = 16, writer_counts=(1, 3)) -> dict:
    """Every (mode, writers) cell on a fresh database of the server at ``url``; the server's durability
    settings with them (they decide the commit's share of the held time)."""
    import psycopg

    from tests.resilience_rig import Postgres

    postgres = Postgres(url)
    postgres.prefix = f"{postgres.config['NAME']}_writers_{os.getpid()}"
    postgres.template = f"{postgres.prefix}_t"
    postgres.create_template()
    database = postgres.create()
    try:
        with psycopg.connect(postgres.url(database), connect_timeout=5) as db:
            server = {name: db.execute(f"SHOW {name}").fetchone()[0]
                      for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")}
        cells = []
        with tempfile.TemporaryDirectory(prefix="airlock-audit-writers-") as tmp:
            for mode in ("batched", "single"):
                for writers in writer_counts:
                    cell = _run_cell(postgres.url(database), mode, writers, seconds, in_flight, Path(tmp))
                    print(json.dumps(cell), file=sys.stderr, flush=True)
                    cells.append(cell)
        verify = subprocess.run([sys.executable, "manage.py", "verify_audit"], cwd=REPO, capture_output=True,
                                text=True, env={**os.environ, "DATABASE_URL": postgres.url(database),
                                                "PYTHONPATH": str(REPO)}, timeout=600)
    finally:
        postgres.drop(database)
        postgres.drop(postgres.template)
    return {"postgres": server, "seconds": seconds, "in_flight": in_flight, "cells": cells,
            "verify_audit": verify.returncode}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_writers", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per cell (default 10)")
    parser.add_argument("--in-flight", type=int, default=16, help="single mode: begin() calls waiting per writer")
    parser.add_argument("--child", choices=("batched", "single"), help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--marker", help=argparse.SUPPRESS)
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airlock.settings")
        django.setup()
        result = asyncio.run(_child(args.child, args.seconds, args.start_at, args.marker, args.in_flight,
                                    args.journal))
        print(json.dumps(result))
        return
    from tests.resilience_rig import postgres_url

    print(json.dumps(run(postgres_url(), seconds=args.seconds, in_flight=args.in_flight), indent=2))


if __name__ == "__main__":
    main()
