"""Streaming measurements: exec stdout throughput and memory under a deliberately slow reader."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import aiohttp

from bench.httpraw import client_context, open_stream
from bench.procs import KUBECTL

EXEC_PROTOCOL = "v5.channel.k8s.io"
STDOUT, STDERR, ERROR = 1, 2, 3


def websocket_url(base_url: str) -> str:
    return "wss://" + base_url.removeprefix("https://")


async def exec_cat(base_url: str, token: str, ca_file, namespace: str, pod: str, path: str) -> dict:
    """``cat path`` in the pod over a v5.channel.k8s.io WebSocket; MB/s of stdout (MB = 10^6 bytes).

    The client is aiohttp's (C frame parser), so it is not what limits the figure.
    """
    url = (f"{websocket_url(base_url)}/api/v1/namespaces/{namespace}/pods/{pod}/exec"
           f"?command=cat&command={path}&stdout=true&stderr=true")
    stdout = stderr = 0
    status = None
    started = time.monotonic()
    connector = aiohttp.TCPConnector(ssl=client_context(ca_file))
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        async with session.ws_connect(url, protocols=[EXEC_PROTOCOL], headers={"Authorization": f"Bearer {token}"},
                                      max_msg_size=0, compress=0, autoping=True, heartbeat=None) as ws:
            if ws.protocol != EXEC_PROTOCOL:
                raise RuntimeError(f"exec negotiated {ws.protocol!r}")
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                data = message.data
                channel = data[0]
                if channel == STDOUT:
                    stdout += len(data) - 1
                elif channel == STDERR:
                    stderr += len(data) - 1
                elif channel == ERROR:
                    status = json.loads(data[1:])
                    break
    seconds = time.monotonic() - started
    return {
        "bytes": stdout,
        "stderr_bytes": stderr,
        "seconds": round(seconds, 3),
        "mb_s": round(stdout / 1e6 / seconds, 1),
        "status": (status or {}).get("status"),
    }


def kubectl_exec_cat(kubeconfig, home, namespace: str, pod: str, path: str) -> dict:
    """The real kubectl (WebSocket exec) reading ``cat path``; wall clock includes kubectl's start-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = str(home)
    argv = [KUBECTL, f"--kubeconfig={kubeconfig}", f"--cache-dir={home / 'cache'}", "exec", "-n", namespace, pod,
            "--", "cat", path]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    received = 0
    while chunk := proc.stdout.read(1 << 20):
        received += len(chunk)
    stderr = proc.stderr.read().decode(errors="replace")
    code = proc.wait(timeout=120)
    seconds = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"kubectl exec exited {code}: {stderr[-1000:]}")
    return {"bytes": received, "seconds": round(seconds, 3), "mb_s": round(received / 1e6 / seconds, 1)}


async def slow_reader(url: str, token: str, ca_file, rss, *, seconds: float, settle: float,
                      read_size: int = 16384, interval: float = 0.1) -> dict:
    """Read a large response at ~read_size/interval bytes/s while sampling the server's RSS.

    A server with back-pressure stops reading from its upstream once the
    socket to this client is full; one without it buffers the rest in memory.
    """
    baseline = rss()
    reader, writer, head = await open_stream(url, token, client_context(ca_file), rcvbuf=read_size,
                                             limit=read_size)
    if head.status != 200:
        writer.transport.abort()
        raise RuntimeError(f"slow read answered {head.status}")
    received, peak, early = 0, baseline, None
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            data = await reader.read(read_size)
            if not data:
                break
            received += len(data)
            peak = max(peak, rss())
            if early is None and time.monotonic() - started >= seconds / 4:
                early = peak
            await asyncio.sleep(interval)
    finally:
        # abort, not close: a TLS close_notify would wait behind the unread response.
        writer.transport.abort()
    elapsed = time.monotonic() - started
    await asyncio.sleep(settle)
    return {
        "seconds": round(elapsed, 1),
        "received_mib": round(received / 2**20, 2),
        "rss_before_mib": round(baseline / 1024, 1),
        "rss_peak_after_quarter_mib": round((early or peak) / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "rss_growth_mib": round((peak - baseline) / 1024, 1),
        "rss_after_close_mib": round(rss() / 1024, 1),
        "settle_s": settle,
    }
