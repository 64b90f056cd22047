"""Test kit for kubesim.streams: a fake cluster and a one-route aiohttp app around handle().

It exercises the streaming handlers without the rest of kubesim; the end-to-end tests in
tests/e2e_kubesim run them behind the real server with real kubectl.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from kubesim import streams


class FakeCluster:
    """The two methods streams.handle() needs, over a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def sandbox_dir(self, namespace: str, name: str) -> Path:
        return self.root / namespace / name

    def port_target(self, pod: dict, port: int) -> tuple[str, int] | None:
        mapping = ((pod.get("metadata") or {}).get("annotations") or {}).get("kubesim.airlock.dev/ports", "")
        for item in filter(None, mapping.split(",")):
            container_port, _, address = item.partition("=")
            host, _, target_port = address.rpartition(":")
            if int(container_port) == port:
                return host, int(target_port)
        return None


def make_pod(name: str = "web", containers: list[dict] | None = None, ports: str = "") -> dict:
    meta: dict = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if ports:
        meta["annotations"] = {"kubesim.airlock.dev/ports": ports}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": containers or [{"name": "app", "image": "busybox"}]},
        "status": {"phase": "Running"},
    }


class StreamServer:
    """An aiohttp server routing /api/v1/namespaces/{ns}/pods/{name}/{sub} to streams.handle."""

    def __init__(self, root: Path) -> None:
        self.cluster = FakeCluster(root)
        self.pods: dict[str, dict] = {}
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/{sub}", self._route)
        self.server = TestServer(app)
        self.session: aiohttp.ClientSession | None = None

    def add_pod(self, pod: dict) -> dict:
        name = pod["metadata"]["name"]
        self.pods[name] = pod
        self.cluster.sandbox_dir("default", name).mkdir(parents=True, exist_ok=True)
        return pod

    async def _route(self, request: web.Request) -> web.StreamResponse:
        pod = self.pods[request.match_info["name"]]
        return await streams.handle(request, self.cluster, pod, request.match_info["sub"])

    async def __aenter__(self) -> StreamServer:
        await self.server.start_server()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()
        await self.server.close()

    def url(self, pod: str, sub: str) -> str:
        return str(self.server.make_url(f"/api/v1/namespaces/default/pods/{pod}/{sub}"))

    def ws(self, pod: str, sub: str, params, protocols=("v5.channel.k8s.io",)):
        return self.session.ws_connect(self.url(pod, sub), params=params, protocols=protocols, autoclose=False)

    async def upgrade_refused(self, pod: str, sub: str, params, protocols: str = "v5.channel.k8s.io") -> tuple[int, dict]:
        """Send a WebSocket handshake that the server answers without upgrading."""
        headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": protocols,
        }
        async with self.session.get(self.url(pod, sub), params=params, headers=headers) as resp:
            return resp.status, await resp.json()


async def collect(ws, decode=lambda m: (m[0], m[1:])) -> list[tuple[int, bytes]]:
    """Every channel message until the server closes, in order."""
    messages = []
    async for msg in ws:
        if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            messages.append(decode(msg.data))
    return messages


def joined(messages: list[tuple[int, bytes]], channel: int) -> bytes:
    return b"".join(payload for ch, payload in messages if ch == channel)


def pids_of(argv: list[str], root: Path) -> list[int]:
    """Host pids of live processes running ``argv`` confined to ``root`` (a pod's sandbox)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
            if cmdline == [a.encode() for a in argv] and os.readlink(entry / "root") == str(root):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """True once no process ``pid`` exists (it was killed and reaped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except (FileNotFoundError, ProcessLookupError):  # gone between open and read
            return True
        await asyncio.sleep(0.05)
    return False


@contextlib.asynccontextmanager
async def echo_server():
    """A TCP echo server on 127.0.0.1 that half-closes when its client does."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
