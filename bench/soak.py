"""``python -m bench.soak [--quick]`` (``make soak``): the resilience suite's long forms, figures in
bench/RESULTS.md.

The rig of tests/e2e_resilience (tests/resilience_rig.py): two gateway processes, started as
docker-compose.yml starts them, on one PostgreSQL database and one Redis, in front of kubesim,
each dependency behind a TCP proxy.  Loopback only; PostgreSQL (DATABASE_URL when it is
PostgreSQL, else AIRLOCK_TEST_POSTGRES_URL, else postgres@127.0.0.1:5432) and Redis
(127.0.0.1:6379, REDIS_URL's database or 7) must be running.  Phases, one after another, each with its own load
(clients, watches, held deletes approved through the other gateway):

1. steady load, no fault;
2. each fault of tests/resilience_load.FAULTS in turn (PostgreSQL refused, partitioned, frozen;
   Redis refused, partitioned; the cluster refused, partitioned, frozen), for ``fault_seconds``;
3. a gateway SIGKILLed under load and started again; the other SIGTERMed with watches open;
4. the seeded fuzz of tests/resilience_fuzz.py, several seeds.

Each phase records its requests, answers by status, the slowest answer per kind of request, the
recovery time (until every gateway answers a request needing the dependency again), what was
wrong with the answers, and the audit events lost: answered requests without exactly one
completion event of their status, requests kubesim received without an audit event, and
RequestReceived events without a completion.  ``verify_audit`` runs at the end.  Bounded: every
wait has a limit; the full profile takes under ten minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from bench import machine, report
from bench.run import _exit_on_signal, _source
from kubesim.testing import start_kubesim
from tests import resilience_fuzz as fuzz
from tests.resilience_load import (
    FAULTS, Load, answers, audit_gaps, by_status, inject, kill_and_restart, slowest, terminate_and_restart,
    watches_open_at,
)
from tests.resilience_rig import REDIS, Postgres, Rig, postgres_url

BENCH_DIR = Path(__file__).resolve().parent
LISTED = 10  # problems listed per phase (all are counted)


@dataclass(frozen=True)
class Profile:
    name: str
    clients: int
    watches: int
    holds: int
    steady_seconds: float
    fault_seconds: float
    settle_seconds: float  # load before and after each fault
    fuzz_seeds: tuple[int, ...]
    fuzz_cases: int  # per seed
    client_timeout: float = 30.0  # no answer within this is a hang
    recover_within: float = 60.0
    drain_within: float = 30.0
    timeouts: tuple[float, float, float] = (2.0, 5.0, 5.0)  # the Connections' connect, first-byte, idle


FULL = Profile("full", clients=50, watches=10, holds=4, steady_seconds=60, fault_seconds=10, settle_seconds=5,
               fuzz_seeds=(1, 2, 3, 4), fuzz_cases=500)
QUICK = Profile("quick", clients=8, watches=2, holds=1, steady_seconds=5, fault_seconds=2, settle_seconds=1,
                fuzz_seeds=(1,), fuzz_cases=100)

# Production defaults except where noted: faults and recoveries are measured in seconds.
SETTINGS = {
    "AIRLOCK_DB_WAIT_SECONDS": "2",  # production 3; a write's audit commit keeps production's 10 s
    "AIRLOCK_DB_STATEMENT_TIMEOUT_SECONDS": "5",  # production 30
    "AIRLOCK_DB_LOCK_TIMEOUT_SECONDS": "2",  # production 10
    "AIRLOCK_HEADER_TIMEOUT_SECONDS": "5",  # production 10: the fuzz sends half requests
    "AIRLOCK_BODY_TIMEOUT_SECONDS": "5",  # production 60
    "AIRLOCK_DEBUG": "false",
}
FUZZ_BOUND = 20.0  # seconds per fuzz case: above the header and body timeouts


def _progress(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _check_services(url: str) -> None:
    try:
        psycopg.connect(Postgres(url).url("postgres"), connect_timeout=5).close()
    except psycopg.Error as exc:
        raise SystemExit(f"make soak needs PostgreSQL ({url}): {exc}") from None
    try:
        socket.create_connection(REDIS, timeout=5).close()
    except OSError as exc:
        raise SystemExit(f"make soak needs Redis on {REDIS[0]}:{REDIS[1]}: {exc}") from None


def _phase(rig: Rig, name: str, prefix: str, outcomes, *, result: dict | None = None, allowed=frozenset(),
           may_fail=frozenset(), approvals=None) -> dict:
    """One phase's figures from its outcomes and the audit trail."""
    result = dict(result or {})
    window = result.pop("window", (0.0, 0.0))
    result.pop("in_place", None)
    problems = answers(outcomes, allowed, window=window, may_fail=may_fail)
    gaps = audit_gaps(rig, outcomes, prefix)
    lost = {key: len(gaps[key]) for key in ("missing", "duplicated", "wrong", "unaudited", "received_only")}
    phase = {
        "phase": name,
        **result,
        "requests": len(outcomes),
        "by_status": by_status(outcomes),
        "slowest_s": slowest(outcomes),
        "problem_count": len(problems),
        "problems": problems[:LISTED],
        "answered": gaps["answered"],
        "forwarded": gaps["forwarded"],
        "closed_as_crashed": len(gaps["crashed"]),
        "events_lost": lost,
        "events_lost_examples": {key: gaps[key][:3] for key in lost if gaps[key]},
    }
    if approvals is not None:
        phase["approvals"] = dict(approvals)
    _progress(f"{name}: {phase['requests']} requests {phase['by_status']}, recovery {result.get('recovery_s')}, "
              f"{len(problems)} problems, events lost {sum(lost.values())}")
    return phase


def _load(rig: Rig, profile: Profile, prefix: str) -> Load:
    return Load(rig, prefix, clients=profile.clients, watches=profile.watches, holds=profile.holds,
                timeout=profile.client_timeout).start(settle=profile.settle_seconds)


def run(profile: Profile, workdir: Path) -> dict:
    url = postgres_url()
    _check_services(url)
    results: dict = {
        "profile": asdict(profile),
        "settings": SETTINGS,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "source": _source(),
        "phases": [],
    }
    started = time.monotonic()
    postgres = Postgres(url)
    _progress("migrating the template database")
    postgres.create_template()
    sim = start_kubesim(workdir / "kubesim")
    rig = None
    try:
        rig = Rig(workdir, postgres, sim, SETTINGS, profile.timeouts).start()
        phases = results["phases"]

        _progress(f"steady load for {profile.steady_seconds:g}s")
        load = _load(rig, profile, "soak/steady/")
        try:
            time.sleep(profile.steady_seconds)
        finally:
            outcomes = load.stop()
        phases.append(_phase(rig, "steady load", "soak/steady/", outcomes, approvals=load.approvals,
                             result={"seconds": profile.steady_seconds}))

        for fault in FAULTS.values():
            prefix = f"soak/{fault.name.replace(' ', '-')}/"
            _progress(f"{fault.name} for {profile.fault_seconds:g}s")
            load = _load(rig, profile, prefix)
            try:
                result = inject(load, fault, profile.fault_seconds, recover_within=profile.recover_within)
                time.sleep(profile.settle_seconds)
            finally:
                outcomes = load.stop()
            phases.append(_phase(rig, fault.name, prefix, outcomes, result=result, allowed=fault.allowed,
                                 approvals=load.approvals))

        victim = rig.gateways[0]
        _progress(f"gateway {victim.name} SIGKILLed under load")
        load = _load(rig, profile, "soak/sigkill/")
        try:
            result = kill_and_restart(load, victim, recover_within=profile.recover_within)
            time.sleep(profile.settle_seconds)
        finally:
            outcomes = load.stop()
        phases.append(_phase(rig, f"gateway {victim.name} SIGKILLed", "soak/sigkill/", outcomes, result=result,
                             may_fail={victim.name}, approvals=load.approvals))

        victim = rig.gateways[1]
        _progress(f"gateway {victim.name} SIGTERMed with watches open")
        load = _load(rig, profile, "soak/sigterm/")
        try:
            result = terminate_and_restart(load, victim, drain_within=profile.drain_within,
                                           recover_within=profile.recover_within)
            time.sleep(profile.settle_seconds)
        finally:
            outcomes = load.stop()
        watches = watches_open_at(outcomes, victim.name, result["window"][0])
        result["watches_open"] = len(watches)
        result["watches_ended_with_error_event"] = sum(1 for w in watches if w.ending == "error-event")
        phases.append(_phase(rig, f"gateway {victim.name} SIGTERMed", "soak/sigterm/", outcomes, result=result,
                             may_fail={victim.name}, approvals=load.approvals))

        results["fuzz"] = _fuzz(rig, profile)
        verify = rig.verify_audit()
        results["verify_audit"] = {"returncode": verify.returncode,
                                   "output": (verify.stdout + verify.stderr).strip()[-600:]}
        results["gateway_errors"] = {g.name: _unexpected_errors(g.log()) for g in rig.gateways}
    finally:
        if rig is not None:
            rig.stop()
        sim.stop()
        postgres.drop(postgres.template)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def _unexpected_errors(log: str) -> dict:
    """Tracebacks in a gateway's log (the faults' own one-line errors are expected) and their exceptions."""
    exceptions = sorted({line.strip()[:160] for line in log.splitlines()
                         if line[:1].isalpha() and ("Error: " in line or "Exception: " in line)
                         and not line.startswith(("INFO", "WARNING", "ERROR"))})
    return {"tracebacks": log.count("Traceback (most recent call last)"), "exceptions": exceptions[:LISTED]}


def _fuzz(rig: Rig, profile: Profile) -> dict:
    all_results = []
    for seed in profile.fuzz_seeds:
        _progress(f"fuzz: seed {seed}, {profile.fuzz_cases} cases")
        cases = fuzz.cases(seed, profile.fuzz_cases, start=seed * 100_000)
        all_results += asyncio.run(fuzz.run_all([g.port for g in rig.gateways], rig.tls.ca_file, cases,
                                                bound=FUZZ_BOUND))
    rows = rig.audit_rows("fuzz/")
    found = fuzz.problems(all_results, [(agent, code) for agent, stage, code, _ in rows if stage == "ResponseComplete"])
    return {"seeds": list(profile.fuzz_seeds), **fuzz.summary(all_results), "problem_count": len(found),
            "problems": found[:LISTED]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: structure check, not figures")
    parser.add_argument("--out", type=Path, help="markdown report (default bench/RESULTS.md; quick: none)")
    parser.add_argument("--json", type=Path, help="raw figures (default bench/soak.json; quick: none)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)  # unwinds like Ctrl-C: every started process is stopped
    profile = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="airlock-soak-") as tmp:
        results = run(profile, Path(tmp))
    raw = args.json or (None if args.quick else BENCH_DIR / "soak.json")
    out = args.out or (None if args.quick else BENCH_DIR / "RESULTS.md")
    if raw:
        raw.write_text(json.dumps(results, indent=2) + "\n")
    if out:  # the bench's last figures with these after them (bench/report.py)
        bench = json.loads((BENCH_DIR / "results.json").read_text())
        out.write_text(report.render(bench, analysis=BENCH_DIR / "analysis.md", soak=results,
                                     scaleout=report.load_scaleout(BENCH_DIR)))
    print(report.soak_summary(results))
    return results


if __name__ == "__main__":
    main()
