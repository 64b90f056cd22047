"""``python -m kubesim``: run the API server double until SIGTERM/SIGINT.

When it is serving it writes ``<state-dir>/kubeconfig`` (admin, with CA data and a token) and then
``<state-dir>/ready.json`` ({url, host, port, ca_file, kubeconfig, pid}); ready.json appears last,
so a harness can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from .auth import Auth, StaticToken, parse_token_spec
from .certs import TLSFiles, generate_tls, server_ssl_context
from . import portforward
from .controllers import Controllers
from .discovery import Discovery
from .requestlog import RequestLog
from .seed import DEFAULT_SEED, SeedError, load_seed_files
from .server import HEADER_LIMITS, KubeSim, read_headers_as_go
from .store import DEFAULT_HISTORY, Cluster

log = logging.getLogger("kubesim")
ADMIN_USER = "kubesim-admin"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kubesim", description="Kubernetes API server double for tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--seed", action="append", default=[], type=Path, help="multi-document YAML manifests")
    p.add_argument("--no-default-seed", action="store_true", help="do not load kubesim/seed.yaml")
    p.add_argument("--token", action="append", default=[], metavar="TOKEN=user:group1,group2[:admin]")
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--ca", type=Path, help="CA that signed --tls-cert; also verifies client certificates")
    p.add_argument("--no-anonymous", action="store_true", help="answer 401 instead of system:anonymous")
    p.add_argument("--watch-history", type=int, default=DEFAULT_HISTORY)
    p.add_argument("--bookmark-interval", type=float, default=5.0)
    p.add_argument("--port-forward-grace", type=float, default=portforward.STARTUP_GRACE, metavar="SECONDS",
                   help="how long after a pod's processes start a refused port-forward connection is retried")
    args = p.parse_args(argv)
    given = [args.tls_cert, args.tls_key, args.ca]
    if any(given) and not all(given):
        p.error("--tls-cert, --tls-key and --ca go together")
    try:
        args.tokens = [parse_token_spec(t) for t in args.token]
    except ValueError as exc:
        p.error(f"--token: {exc}")
    return args


def write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.touch(mode=0o600, exist_ok=True)
    tmp.chmod(0o600)
    tmp.write_text(text)
    tmp.replace(path)


def kubeconfig(url: str, ca_pem: bytes, token: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubesim", "cluster": {
            "server": url, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": "kubesim", "context": {"cluster": "kubesim", "user": ADMIN_USER,
                                                      "namespace": "default"}}],
        "current-context": "kubesim",
        "preferences": {},
    }, sort_keys=False)


async def serve(args: argparse.Namespace) -> None:
    state: Path = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    for stale in ("ready.json", "kubeconfig"):
        (state / stale).unlink(missing_ok=True)
    portforward.STARTUP_GRACE = args.port_forward_grace
    if args.tls_cert:
        tls = TLSFiles(ca_file=args.ca.resolve(), cert_file=args.tls_cert.resolve(), key_file=args.tls_key.resolve())
    else:
        tls = generate_tls(state)
    ca_pem = tls.ca_file.read_bytes()

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    host_part = f"[{args.host}]" if ":" in args.host else args.host
    url = f"https://{host_part}:{port}"

    admin_token = secrets.token_urlsafe(32)
    tokens = [StaticToken(admin_token, ADMIN_USER, ("system:masters",), True), *args.tokens]
    auth = Auth(tokens, ec.generate_private_key(ec.SECP256R1()), anonymous=not args.no_anonymous)
    cluster = Cluster(Discovery(f"{args.host}:{port}"), state, history_size=args.watch_history,
                      ca_pem=ca_pem.decode())
    auth.cluster = cluster

    def issue_legacy(ns: str, sa: str, secret: str) -> str:
        account = cluster.find("", "serviceaccounts", ns, sa)
        uid = account["metadata"]["uid"] if account else ""
        return auth.issue_token(ns, sa, uid, expiration_seconds=None, secret_name=secret)[0]

    Controllers(cluster, token_issuer=issue_legacy)
    seeds = ([] if args.no_default_seed else [DEFAULT_SEED]) + list(args.seed)
    load_seed_files(cluster, seeds)

    requestlog = RequestLog(state / "requests.jsonl")
    sim = KubeSim(cluster, auth, requestlog, bookmark_interval=args.bookmark_interval)
    read_headers_as_go()
    runner = web.AppRunner(sim.app(), handler_cancellation=True, access_log=None, **HEADER_LIMITS)
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=server_ssl_context(tls), shutdown_timeout=1.0)
    await site.start()

    write_private(state / "kubeconfig", kubeconfig(url, ca_pem, admin_token))
    ready = {"url": url, "host": args.host, "port": port, "ca_file": str(tls.ca_file),
             "kubeconfig": str(state / "kubeconfig"), "pid": os.getpid()}
    write_private(state / "ready.json", json.dumps(ready))
    log.info("kubesim serving %s (state %s, %d objects)", url, state, sum(1 for _ in cluster.all_objects()))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("kubesim stopping")
    await runner.cleanup()
    requestlog.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="kubesim %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except SeedError as exc:
        log.error("seed: %s", exc)
        return 2
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
