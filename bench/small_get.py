"""``python -m bench.small_get [--tree BASE] [--runs N]``: only the bench's small-GET cells, for a quick A/B.

``make bench`` takes about seven minutes; a change to the serving path wants its small-GET figures
against the tree it started from, several times over.  This starts what ``bench.run`` starts for those
cells (kubesim, the OIDC issuer, the production-guardrails rules, docker-compose.yml's gateway with its
workers and audit writer on PostgreSQL and Redis when they answer) once per tree (``--tree``: another
checkout, e.g. ``git archive HEAD | tar -x -C /tmp/base``), then runs wrk at each connection count,
alternating the trees, and prints the CPU each gateway's processes used per request (from /proc), per
process and in total, with the medians over the runs.  CPU time, not throughput, is what stays
comparable on a machine shared with other work.  ``--profile DIR``: after the runs, one more wrk run
on this tree at the largest connection count with py-spy recording every gateway process (raw
collapsed stacks in DIR, and each process's top functions printed).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench import cluster, cpu_profile, idp, procs
from bench.load import Wrk
from bench.run import AGENT_GROUP, AGENT_SUBJECT, Target, _check, _prepare_database
from kubesim.certs import generate_tls


def gateway(name: str, tree: Path, env: dict, tls, workdir: Path) -> procs.Service:
    """``tree``'s docker-compose.yml gateway (its own flags and code), with its own journal and metrics."""
    command = yaml.safe_load((tree / "docker-compose.yml").read_text())["services"]["gateway"]["command"]
    flags = [arg for arg in command[2:] if not arg.startswith(("--host", "--port", "--ssl-"))]
    port = procs.free_port()
    argv = [procs.PYTHON, "-m", "uvicorn", command[1], *flags, "--host=127.0.0.1", f"--port={port}",
            f"--ssl-certfile={tls.cert_file}", f"--ssl-keyfile={tls.key_file}"]
    (workdir / f"metrics-{name}").mkdir()
    env = dict(env, PYTHONPATH=str(tree), AIRLOCK_VAR_DIR=str(workdir / f"var-{name}"),
               PROMETHEUS_MULTIPROC_DIR=str(workdir / f"metrics-{name}"))
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=tree)
    workers = int(next((a.split("=", 1)[1] for a in flags if a.startswith("--workers=")), "1"))
    service = procs.Service(name=name, proc=proc, url=f"https://127.0.0.1:{port}", log_path=log_path, port=port,
                            workers=workers)
    return procs.wait_workers(procs.wait_listening(service))


def cell(wrk: Wrk, target: Target, path: str, connections: int, seconds: int) -> dict:
    """One wrk run; CPU microseconds per request of each of the gateway's processes and in total."""
    pids = target.service.pids()
    before = {pid: procs._sum_alive(procs.cpu_seconds, [pid]) for pid in pids}
    result = wrk.run(target.base_url + path, target.token, connections, seconds)
    if any(result.errors.values()) or not result.requests:
        raise RuntimeError(f"{target.name}: wrk saw errors {result.errors} in {result.requests} requests")
    each = {pid: (procs._sum_alive(procs.cpu_seconds, [pid]) - before[pid]) * 1e6 / result.requests for pid in pids}
    return {"us_per_request": sum(each.values()), "each": each, "rps": result.rps, "p50_ms": result.p50_ms}


def profile(wrk: Wrk, target: Target, path: str, connections: int, seconds: int, out: Path,
            native: bool = False) -> None:
    """py-spy on every process of ``target`` during one wrk run; each one's top functions (own samples).
    ``native``: C frames too (uvloop, OpenSSL, the interpreter), for what a Python leaf hides."""
    recorders = cpu_profile.record(target.service.pids(), seconds + 1, out, native)
    cell(wrk, target, path, connections, seconds)
    for pid, recorder in recorders.items():
        recorder.communicate(timeout=seconds + 30)
        raw = out / f"{pid}.txt"
        if not raw.exists():
            continue
        own, total = collections.Counter(), 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.rsplit(";", 1)[-1]
            own[leaf] += int(count)
            total += int(count)
        print(f"process {pid}: {total} samples; top functions by own samples", file=sys.stderr)
        for leaf, n in own.most_common(25):
            print(f"  {n * 100 / total:5.1f}%  {leaf}", file=sys.stderr)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.small_get", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="another checkout to compare with (alternating runs)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, help="of each wrk run")
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--profile", type=Path, help="py-spy every gateway process of this tree in one more run")
    parser.add_argument("--native", action="store_true", help="with --profile: native frames too (py-spy --native)")
    args = parser.parse_args(argv)
    trees = {"this": procs.REPO, **({"base": args.tree.resolve()} if args.tree else {})}
    counts = [int(c) for c in args.connections.split(",")]
    results = {name: {c: [] for c in counts} for name in trees}
    with tempfile.TemporaryDirectory(prefix="airlock-small-get-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        backend_env = stack.enter_context(procs.backends("small_get"))
        sim = cluster.start(workdir / "kubesim", exec_bytes=1024, log_bytes=1024)
        stack.callback(sim.stop)
        issuer = idp.Issuer(workdir / "oidc-issuer").start()
        stack.callback(issuer.stop)
        token = issuer.token(AGENT_SUBJECT, [AGENT_GROUP])
        env = procs.clean_env(AIRLOCK_ENV="development", AIRLOCK_SQLITE_PATH=str(workdir / "airlock.sqlite3"),
                              AIRLOCK_VAR_DIR=str(workdir / "var"), **issuer.settings(), AIRLOCK_DEBUG="false",
                              AIRLOCK_AUDIT_WRITER="process", **backend_env)
        _prepare_database(env, sim, sim.admin_token)
        tls = generate_tls(workdir / "gateway-tls")
        targets = {}
        for name, tree in trees.items():
            service = gateway(name, tree, env, tls, workdir)
            stack.callback(service.stop)
            targets[name] = Target(name, f"{service.url}/k8s/kubesim", token, tls.ca_file, service)
        namespace, configmap = cluster.SMALL_CONFIGMAP
        path = f"/api/v1/namespaces/{namespace}/configmaps/{configmap}"
        for target in targets.values():
            _check(target, path, count=200)
        wrk = Wrk(workdir, threads=2)
        for run in range(args.runs):
            for connections in counts:
                order = list(targets.values())
                for target in order if run % 2 == 0 else order[::-1]:
                    measured = cell(wrk, target, path, connections, args.seconds)
                    results[target.name][connections].append(measured)
                    each = " ".join(f"{pid}:{us:.0f}" for pid, us in measured["each"].items() if us >= 1)
                    print(f"run {run} c={connections} {target.name}: {measured['us_per_request']:.0f} us/request "
                          f"({each}) {measured['rps']} req/s, p50 {measured['p50_ms']:.3f} ms", file=sys.stderr, flush=True)
        if args.profile:
            profile(wrk, targets["this"], path, max(counts), max(args.seconds, 5), args.profile, args.native)
    for name, per_count in results.items():
        for connections, runs in per_count.items():
            values = [r["us_per_request"] for r in runs]
            p50 = statistics.median(r["p50_ms"] for r in runs)
            print(f"{name} c={connections}: median {statistics.median(values):.0f} us CPU per request "
                  f"(runs {', '.join(f'{v:.0f}' for v in values)}), median p50 {p50:.3f} ms")
    return results


if __name__ == "__main__":
    main()
