"""``python -m bench.hotpath``: the gateway's CPU per small GET, in process, and how it grows.

The instrument for the per-request CPU of issue 16: many small GETs driven straight into the
ASGI application (``airlock.app.make_application``, the router included) without a server in
front, so the figure is the gateway's own work per request: OIDC authentication (a real
:class:`identity.oidc.Authenticator`, its identity provider answered in memory), the
connection's rules, masking (by detectors and by the cluster's Secret values), the audit
recording, and the upstream call over TLS to kubesim through the production client.  The
server's part (uvicorn, TLS to the agent) is not in it; ``bench.run`` measures the whole.

Each measurement runs in a fresh child process (its own throw-away SQLite database) against one
kubesim started by the parent; the figures are CPU time of the event loop's thread per request
(``loop``: what the request handling costs, the audit writer thread left out) and of the whole
process (``process``), the median of several batches.  ``--tree DIR`` runs the child on another
source tree (``git archive`` of an older commit), so two versions can be compared in alternating
runs on this shared machine.

Scaling (issue 16 item 4): the same GET with 10, 100 and 1,000 rules on the connection, and with
1, 10 and 100 configured connections (requests spread over all of them), see :func:`scaling`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMALL_PATH = "/api/v1/namespaces/default/configmaps/bench-small"
ISSUER = "https://idp.bench.invalid"
AUDIENCE = "airlock"
AGENT_GROUP = "bench-agents"
RULE_COUNTS = (10, 100, 1000)
CONNECTION_COUNTS = (1, 10, 100)


# -- the child: one measurement in its own process ------------------------------------------------

def _filler_rules(count: int) -> list[dict]:
    """``count`` rules that do not decide the bench GET, in the shapes real rule sets have: rules of
    other teams (groups), and the bench agents' own rules for other resources, verbs and namespaces
    (denies, reviews, leases).  They come first, so the deciding rule is the last one."""
    shapes = []
    for i in range(count):
        kind = i % 4
        if kind == 0:  # another team's allow
            shapes.append(dict(effect="allow", groups=[f"team-{i}"], verbs=["get", "list", "watch"],
                               api_groups=[""], resources=["configmaps", "pods"], namespaces=[f"team-{i}"], names=["*"]))
        elif kind == 1:  # the agents may not touch Secrets of some namespace
            shapes.append(dict(effect="deny", groups=[AGENT_GROUP], verbs=["*"], api_groups=[""],
                               resources=["secrets"], namespaces=[f"prod-{i}"], names=["*"]))
        elif kind == 2:  # deletes of deployments are reviewed
            shapes.append(dict(effect="review", groups=[AGENT_GROUP], verbs=["delete", "deletecollection"],
                               api_groups=["apps"], resources=["deployments"], namespaces=[f"ns-{i}"], names=["*"]))
        else:  # exec into pods of one namespace under a lease
            shapes.append(dict(effect="allow", subjects=[f"agent-{i}"], verbs=["create", "get"], api_groups=[""],
                               resources=["pods/exec"], namespaces=[f"ns-{i}"], names=["*"], requires_lease=True))
    return shapes


def _prepare(spec: dict) -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from connections.models import Connection
    from policy.models import Rule

    ca = Path(spec["ca_file"]).read_text()
    for c in range(spec["connections"]):
        connection = Connection(name=_connection_name(c), server_url=spec["server_url"], ca_bundle=ca)
        connection.bearer_token = spec["token"]
        connection.full_clean()
        connection.save()
        rules = [Rule(connection=connection, order=10 + i, name=f"filler-{i}", **fields)
                 for i, fields in enumerate(_filler_rules(spec["rules"] - 1))]
        rules.append(Rule(connection=connection, order=10 + spec["rules"], name="bench-all", effect="allow",
                          groups=[AGENT_GROUP], verbs=["*"], api_groups=["*"], resources=["*", "*/*"],
                          namespaces=["*"], names=["*"]))
        for rule in rules:
            rule.full_clean(exclude=["connection"])
        Rule.objects.bulk_create(rules)


def _connection_name(index: int) -> str:
    return "kubesim" if index == 0 else f"kubesim-{index}"


class _IdentityProvider:
    """An OIDC issuer answered in memory (discovery and JWKS), and the agents' tokens it signs."""

    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def transport(self):
        import httpx
        import jwt

        jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(self.key.public_key()))
        jwk["kid"] = "bench-1"

        def answer(request):
            if request.url.path == "/.well-known/openid-configuration":
                return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/keys"})
            if request.url.path == "/keys":
                return httpx.Response(200, json={"keys": [jwk]})
            return httpx.Response(404)

        return httpx.MockTransport(answer)

    def token(self, subject: str) -> str:
        import jwt

        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 3600,
                  "groups": [AGENT_GROUP]}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "bench-1", "typ": "at+jwt"})


def _scope(connection: str, token: str) -> dict:
    path = f"/k8s/{connection}{SMALL_PATH}"
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "GET", "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8443), "extensions": {},
        "headers": [
            (b"host", b"127.0.0.1:8443"),
            (b"user-agent", b"kubectl/v1.37.1 (linux/amd64) kubernetes/bench"),
            (b"accept", b"application/json"),
            (b"kubectl-command", b"kubectl get"),
            (b"kubectl-session", b"0b6ad8a1-5d6c-4a1c-9f0e-2f1f7d0c9b11"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"accept-encoding", b"gzip"),
        ],
    }


async def _get(app, scope: dict) -> int:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(dict(scope), receive, send)
    status = sent[0]["status"] if sent else 0
    if status != 200:
        raise RuntimeError(f"the bench GET answered {status}: {sent[-1].get('body', b'')[:300]!r}")
    return status


async def _measure(spec: dict) -> dict:
    from airlock.app import make_application
    from identity.oidc import Authenticator
    from identity.oidc_config import AuthenticatorConfig, IssuerConfig

    idp = _IdentityProvider()
    authenticator = Authenticator(AuthenticatorConfig(issuers=(IssuerConfig(issuer=ISSUER, audiences=(AUDIENCE,)),)),
                                  transport=idp.transport())
    app = make_application(authenticator=authenticator, sweeper=None, metrics=None)
    concurrency = spec["concurrency"]
    names = [_connection_name(c) for c in range(spec["connections"])]
    scopes = [_scope(names[i % len(names)], idp.token(f"agent-{i}")) for i in range(max(concurrency, len(names)))]
    async with app.lifespan():
        async def client(count: int, offset: int):
            for i in range(count):
                await _get(app, scopes[(offset + i * concurrency) % len(scopes)])

        async def batch(count: int) -> None:
            per = count // concurrency
            await asyncio.gather(*(client(per, k) for k in range(concurrency)))

        # Warm up: every connection's client, Secret values and rules, every token validated once.
        for scope in scopes:
            await _get(app, scope)
        await batch(spec["warmup"])
        if spec.get("ready_file"):
            Path(spec["ready_file"]).write_text(str(os.getpid()))
            await asyncio.sleep(spec.get("ready_pause", 0.0))
        runs = []
        for _ in range(spec["batches"]):
            requests = (spec["requests"] // concurrency) * concurrency
            usage0 = resource.getrusage(resource.RUSAGE_THREAD)
            loop0, process0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
            await batch(requests)
            loop1, process1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
            usage1 = resource.getrusage(resource.RUSAGE_THREAD)
            runs.append({"requests": requests, "loop_us": (loop1 - loop0) * 1e6 / requests,
                         "loop_system_us": (usage1.ru_stime - usage0.ru_stime) * 1e6 / requests,
                         "process_us": (process1 - process0) * 1e6 / requests,
                         "wall_us": (wall1 - wall0) * 1e6 / requests})
            await app.recorder.flush()  # the writer's backlog is not left to the next batch
    return {
        "rules": spec["rules"], "connections": spec["connections"], "concurrency": concurrency,
        "loop_us": round(statistics.median(r["loop_us"] for r in runs), 1),
        "process_us": round(statistics.median(r["process_us"] for r in runs), 1),
        "wall_us": round(statistics.median(r["wall_us"] for r in runs), 1),
        "loop_system_us": round(statistics.median(r["loop_system_us"] for r in runs), 1),
        "loop_us_runs": [round(r["loop_us"], 1) for r in runs],
    }


def child_main(spec: dict) -> dict:
    """Runs in the child process: settings for a throw-away database, then :func:`_measure`."""
    workdir = Path(spec["workdir"])
    os.environ.update(
        DJANGO_SETTINGS_MODULE="airlock.settings", AIRLOCK_ENV="development", AIRLOCK_DEBUG="false",
        AIRLOCK_VAR_DIR=str(workdir / "var"), AIRLOCK_SQLITE_PATH=str(workdir / "airlock.sqlite3"),
    )
    for name in [n for n in os.environ if n.startswith(("DATABASE_URL", "REDIS_URL"))]:
        del os.environ[name]
    import logging

    import django
    import uvloop

    django.setup()
    logging.disable(logging.WARNING)  # the bench's own noise (e.g. a slow first list) is not the figure
    _prepare(spec)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_measure(spec))


# -- the parent: kubesim, the children, the tables -------------------------------------------------

def measure(sim, *, rules: int = 10, connections: int = 1, requests: int = 1000, batches: int = 5,
            concurrency: int = 8, warmup: int = 200, tree: Path | None = None, timeout: float = 170,
            profile_to: Path | None = None, profile_seconds: float = 0) -> dict:
    """One measurement in a fresh child process against ``sim`` (a running kubesim)."""
    with tempfile.TemporaryDirectory(prefix="airlock-hotpath-") as tmp:
        spec = {"workdir": tmp, "server_url": sim.url, "ca_file": str(sim.ca_file), "token": sim.admin_token,
                "rules": rules, "connections": connections, "requests": requests, "batches": batches,
                "concurrency": concurrency, "warmup": warmup}
        if profile_to is not None:
            spec.update(ready_file=str(Path(tmp) / "ready"), ready_pause=0.0)
        tree = Path(tree) if tree is not None else REPO
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOCK_", "DATABASE_URL", "REDIS_URL"))}
        env["PYTHONPATH"] = str(tree)
        code = (f"import sys, json; sys.path.insert(0, {str(tree)!r}); sys.path.insert(1, {str(REPO)!r})\n"
                "from bench.hotpath import child_main\n"
                "print(json.dumps(child_main(json.loads(sys.stdin.read()))))\n")
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=str(tree))
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        proc.stdin = None  # communicate() only reads from here on
        spy = None
        if profile_to is not None:
            spy = _profile_when_ready(proc, Path(spec["ready_file"]), profile_to, profile_seconds)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError("bench.hotpath: a measurement took too long") from None
        finally:
            if spy is not None:
                spy.wait(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"bench.hotpath: the measurement failed:\n{err[-3000:]}")
        result = json.loads(out.strip().splitlines()[-1])
        result["pid"] = proc.pid
        return result


def _profile_when_ready(proc, ready: Path, out: Path, seconds: float):
    """py-spy on the child once it is warm (raw collapsed stacks, every thread, for bench.hotpath's summary)."""
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.pid),
                             "--duration", str(max(1, int(seconds))), "--rate", "500", "--format", "raw",
                             "--threads", "--gil", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def scaling(profile, sim=None) -> dict:
    """Issue 16 item 4: CPU per small GET against rules per connection and configured connections.

    ``profile`` is bench.run's Profile (QUICK: few requests, only the smallest and largest points);
    ``sim``: a running kubesim (bench.run's), else one is started here.  One connection with 10
    rules is the first point of both tables and measured once."""
    quick = profile.name == "quick"
    requests, batches, warmup = (100, 1, 50) if quick else (1000, 5, 200)
    rule_counts = (RULE_COUNTS[0], RULE_COUNTS[-1]) if quick else RULE_COUNTS
    connection_counts = (CONNECTION_COUNTS[0], 10) if quick else CONNECTION_COUNTS
    own = sim is None
    if own:
        from bench import cluster

        workdir = tempfile.mkdtemp(prefix="airlock-hotpath-sim-")
        sim = cluster.start(Path(workdir) / "kubesim", exec_bytes=1024, log_bytes=1024)
    try:
        measured = {}
        for rules, connections in [(r, 1) for r in rule_counts] + [(RULE_COUNTS[0], c) for c in connection_counts]:
            if (rules, connections) not in measured:
                measured[rules, connections] = measure(sim, rules=rules, connections=connections, requests=requests,
                                                       batches=batches, warmup=warmup)
    finally:
        if own:
            sim.stop()
    return {"requests": requests, "batches": batches,
            "rules": [measured[r, 1] for r in rule_counts],
            "connections": [measured[RULE_COUNTS[0], c] for c in connection_counts]}


def render_scaling(results: dict) -> str:
    """Markdown: the two scaling tables."""
    lines = [
        f"In process (bench/hotpath.py): small GETs straight into the ASGI application, 8 at a time, "
        f"{results['requests']} per batch, median of {results['batches']} batches; OIDC authentication, "
        "masking (detectors and Secret values) and audit on. CPU in microseconds per request: the event "
        "loop's thread, and the whole process (the audit writer thread included). No server in front: "
        "uvicorn and TLS to the agent are not in these figures.",
        "",
        "| rules on the connection | event loop CPU us/req | process CPU us/req |",
        "|---|---|---|",
    ]
    lines += [f"| {r['rules']} | {r['loop_us']} | {r['process_us']} |" for r in results["rules"]]
    lines += ["", "| configured connections (requests spread over all) | event loop CPU us/req | process CPU us/req |",
              "|---|---|---|"]
    lines += [f"| {r['connections']} | {r['loop_us']} | {r['process_us']} |" for r in results["connections"]]
    return "\n".join(lines) + "\n"


def summarize_profile(raw: Path, top: int = 30) -> list[tuple[str, float, float]]:
    """From py-spy's raw output (``--threads --gil``): (function, inclusive share, own share) of the
    event loop thread's samples (the thread that runs the bench's requests)."""
    lines = raw.read_text().splitlines()
    loop = next((line.split(";", 1)[0] for line in lines if "_measure" in line), None)
    inclusive, own, total = {}, {}, 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or frames[0] != loop:
            continue
        n = int(count)
        total += n
        seen = set()
        for frame in frames[1:]:
            name = frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
            if name not in seen:
                inclusive[name] = inclusive.get(name, 0) + n
                seen.add(name)
        leaf = frames[-1]
        leaf = leaf.split(" (")[0] + " (" + leaf.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
        own[leaf] = own.get(leaf, 0) + n
    ranked = sorted(inclusive, key=inclusive.get, reverse=True)[:top]
    return [(name, inclusive[name] / total, own.get(name, 0) / total) for name in ranked] if total else []


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="DIR",
                        help="source tree(s) to compare with this one, alternating runs (repeatable)")
    parser.add_argument("--runs", type=int, default=1, help="alternating runs per tree")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="py-spy raw output here, and a summary of the loop's samples")
    parser.add_argument("--scaling", action="store_true", help="the scaling tables (FULL profile)")
    args = parser.parse_args(argv)
    from bench import cluster

    with tempfile.TemporaryDirectory(prefix="airlock-hotpath-sim-") as tmp:
        sim = cluster.start(Path(tmp) / "kubesim", exec_bytes=1024, log_bytes=1024)
        try:
            if args.scaling:
                from bench.run import FULL

                print(render_scaling(scaling(FULL, sim)))
                return
            trees = [("this", None)] + [(t, Path(t)) for t in args.tree]
            results = {name: [] for name, _ in trees}
            for _ in range(args.runs):
                for name, tree in trees:
                    result = measure(sim, rules=args.rules, connections=args.connections, requests=args.requests,
                                     batches=args.batches, concurrency=args.concurrency, tree=tree,
                                     profile_to=args.profile if name == "this" else None,
                                     profile_seconds=8)
                    results[name].append(result)
                    print(json.dumps({"tree": name, **result}), flush=True)
            for name, runs in results.items():
                print(f"{name}: loop us/req median {statistics.median(r['loop_us'] for r in runs):.1f} "
                      f"(runs {[r['loop_us'] for r in runs]}), process "
                      f"{statistics.median(r['process_us'] for r in runs):.1f}")
            if args.profile is not None and args.profile.exists():
                for name, inclusive, own in summarize_profile(args.profile, 60):
                    print(f"{inclusive * 100:5.1f}% {own * 100:5.1f}%  {name}")
        finally:
            sim.stop()


if __name__ == "__main__":
    main()
