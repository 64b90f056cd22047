"""``python -m bench.audit_cost``: what recording a request costs the gateway, in a short bounded run.

Starts kubesim, bench.idp's OIDC issuer and one gateway (uvicorn, production settings as bench.run
starts them: the agent presents the issuer's JWT, no static tokens; SQLite),
then runs wrk's small GET at 1 and 32 connections, alternating ``--variants`` (environment
overrides, e.g. the audit journal on and off) so that other load on the machine hits each alike.
Prints one JSON line per cell: requests per second, latency percentiles and the gateway's CPU
milliseconds per request (the stable figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench import cluster, idp, procs
from bench.load import Wrk
from bench.run import AGENT_GROUP, AGENT_SUBJECT, Target, _check, _combine, _prepare_database, _small_get
from kubesim.certs import generate_tls


def parse_variant(text: str) -> tuple[str, dict]:
    """``name`` or ``name:KEY=VALUE,KEY=VALUE``; the key ``TREE`` runs that variant's gateway from
    another source tree (e.g. ``git archive main`` unpacked), everything else is its environment."""
    name, _, rest = text.partition(":")
    overrides = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, overrides


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="per wrk run (default 3)")
    parser.add_argument("--repetitions", type=int, default=3, help="wrk runs per cell and variant (default 3)")
    parser.add_argument("--connections", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                        help="a gateway started with these environment overrides (repeatable; default: one, as is)")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant] or [("as-is", {})]
    levels = [int(c) for c in args.connections.split(",")]
    services = []
    with tempfile.TemporaryDirectory(prefix="airlock-audit-cost-") as tmp:
        workdir = Path(tmp)
        sim = cluster.start(workdir / "kubesim", exec_bytes=1024, log_bytes=1024)
        issuer = idp.Issuer(workdir / "oidc-issuer").start()
        try:
            token = issuer.token(AGENT_SUBJECT, [AGENT_GROUP])
            env = procs.clean_env(
                AIRLOCK_ENV="development",
                AIRLOCK_VAR_DIR=str(workdir / "var"),
                AIRLOCK_SQLITE_PATH=str(workdir / "airlock.sqlite3"),
                **issuer.settings(),  # AIRLOCK_OIDC_ISSUERS and AIRLOCK_OIDC_CA_FILE; no static tokens
                AIRLOCK_DEBUG="false",
            )
            _prepare_database(env, sim, sim.admin_token)
            tls = generate_tls(workdir / "gateway-tls")
            targets = {}
            for name, overrides in variants:
                tree = Path(overrides.pop("TREE", procs.REPO))
                variant_env = dict(env, PYTHONPATH=str(tree), **overrides)
                repo, procs.REPO = procs.REPO, tree  # spawn_uvicorn runs the server from procs.REPO
                try:
                    service = procs.spawn_uvicorn(name, "airlock.asgi:application", variant_env, tls, workdir)
                finally:
                    procs.REPO = repo
                service = procs.wait_listening(service)
                services.append(service)
                targets[name] = Target(name, f"{service.url}/k8s/kubesim", token, tls.ca_file, service)
            namespace, name = cluster.SMALL_CONFIGMAP
            small = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
            for target in targets.values():
                _check(target, small)
            wrk = Wrk(workdir, threads=2)
            for connections in levels:
                runs = {key: [] for key in targets}
                for _ in range(args.repetitions):
                    for key, target in targets.items():
                        runs[key].append(_small_get(wrk, target, small, connections, args.seconds, sim.proc.pid))
                for key, cell_runs in runs.items():
                    cell = _combine(cell_runs)
                    print(json.dumps({"variant": key, **{k: cell[k] for k in (
                        "connections", "requests", "rps", "p50_ms", "p99_ms", "proxy_cpu_ms_per_request",
                        "other_cpu_cores", "errors")}}), flush=True)
            for service in services:
                if not service.alive():
                    print(f"{service.name} died:\n{service.log_tail()}", file=sys.stderr)
        finally:
            for service in services:
                service.stop()
            issuer.stop()
            sim.stop()


if __name__ == "__main__":
    main()
