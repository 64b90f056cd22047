"""What an MCP tool call costs on top of the same Kubernetes request sent through the gateway directly.

One uvicorn gateway (``airlock.asgi:application``, SQLite) in front of kubesim, the agent
authenticated as in ``make bench`` (a JWT of bench.idp's OIDC issuer, no static tokens);
``--calls`` times each, alternating: ``get_resource`` of a small ConfigMap through the MCP endpoint
with the ``mcp`` SDK's own client (one connection, protocol 2026-07-28), and the GET of the same
ConfigMap at ``/k8s/kubesim/...`` with httpx.  Prints latency percentiles as JSON.
Timing is noisy on a shared machine: compare the two columns of one run, not runs.

    .venv/bin/python -m bench.mcp_tools --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from bench import cluster, idp, procs
from bench.run import AGENT_GROUP, AGENT_SUBJECT, _prepare_database
from kubesim.certs import generate_tls


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)  # noqa: E731
    return {"p50_ms": pick(0.5), "p95_ms": pick(0.95), "mean_ms": round(statistics.fmean(ordered) * 1000, 2)}


async def measure(url: str, ca_file: Path, token: str, calls: int) -> dict:
    namespace, name = cluster.SMALL_CONFIGMAP
    context = ssl.create_default_context(cafile=str(ca_file))
    headers = {"Authorization": f"Bearer {token}"}
    mcp_times, direct_times = [], []
    async with httpx2.AsyncClient(verify=context, headers=headers, timeout=30) as http, \
            httpx.AsyncClient(verify=context, headers=headers, timeout=30) as direct:
        async with Client(streamable_http_client(f"{url}/mcp/kubesim/", http_client=http)) as client:
            arguments = {"resource": "configmaps", "name": name, "namespace": namespace}
            for _ in range(10):  # warm up both paths, and make sure they answer (a bench of refusals looks fast)
                warm = await client.call_tool("get_resource", arguments)
                assert not warm.is_error, warm
                answer = await direct.get(f"{url}/k8s/kubesim/api/v1/namespaces/{namespace}/configmaps/{name}")
                assert answer.status_code == 200, answer.text
            for _ in range(calls):
                started = time.perf_counter()
                result = await client.call_tool("get_resource", arguments)
                mcp_times.append(time.perf_counter() - started)
                assert not result.is_error, result
                started = time.perf_counter()
                response = await direct.get(f"{url}/k8s/kubesim/api/v1/namespaces/{namespace}/configmaps/{name}")
                direct_times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
    return {"calls": calls, "mcp_get_resource": percentiles(mcp_times), "gateway_get": percentiles(direct_times)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="airlock-bench-mcp-") as tmp:
        workdir = Path(tmp)
        sim = cluster.start(workdir / "kubesim", exec_bytes=1024, log_bytes=1024)
        issuer = idp.Issuer(workdir / "oidc-issuer").start()
        service = None
        try:
            token = issuer.token(AGENT_SUBJECT, [AGENT_GROUP])
            env = procs.clean_env(AIRLOCK_ENV="development", AIRLOCK_VAR_DIR=str(workdir / "var"),
                                  AIRLOCK_SQLITE_PATH=str(workdir / "airlock.sqlite3"),
                                  **issuer.settings(), AIRLOCK_DEBUG="false")
            _prepare_database(env, sim, sim.admin_token)
            tls = generate_tls(workdir / "gateway-tls")
            service = procs.wait_listening(procs.spawn_uvicorn("uvicorn", "airlock.asgi:application", env, tls, workdir))
            result = asyncio.run(measure(service.url, tls.ca_file, token, args.calls))
        except Exception:
            if service is not None:
                print(service.log_tail())
            raise
        finally:
            if service is not None:
                service.stop()
            issuer.stop()
            sim.stop()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
