"""kubesim with the objects and files the bench reads."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from kubesim.testing import KubeSimProcess, start_kubesim

NAMESPACE = "bench"
SMALL_CONFIGMAP = ("default", "bench-small")
EXEC_POD = "bench-exec"
CONTAINER = "main"
# The same size twice: random bytes (like the tar stream of `kubectl cp`) and log-like text.
EXEC_FILES = {"binary": "big.bin", "text": "big.txt"}
BLOCK = 1 << 20


def admin_client(sim: KubeSimProcess, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=sim.url, verify=str(sim.ca_file), trust_env=False,
                        headers={"Authorization": f"Bearer {sim.admin_token}"}, timeout=30, **kwargs)


def async_admin_client(sim: KubeSimProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sim.url, verify=str(sim.ca_file), trust_env=False,
                             headers={"Authorization": f"Bearer {sim.admin_token}"}, timeout=30)


def _create(client: httpx.Client, path: str, body: dict) -> None:
    response = client.post(path, json=body)
    if response.status_code != 201:
        raise RuntimeError(f"creating {path} in kubesim failed: {response.status_code} {response.text[:300]}")


def _write_blocks(path: Path, size: int, block: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
        out.write(block[: size % len(block)])


def _log_block() -> bytes:
    lines, size, n = [], 0, 0
    while size < BLOCK:
        line = f"2026-11-26T12:00:00.{n % 1000:03d}Z INFO bench request served path=/api/items/{n} status=200 bytes=512\n"
        lines.append(line)
        size += len(line)
        n += 1
    return "".join(lines).encode()[:BLOCK]


def start(state_dir: Path, *, exec_bytes: int, log_bytes: int) -> KubeSimProcess:
    """Start kubesim and create the bench objects: a small ConfigMap, a watched one, a pod with big files."""
    sim = start_kubesim(state_dir, "--watch-history", "100000")
    with admin_client(sim) as client:
        _create(client, "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        namespace, name = SMALL_CONFIGMAP
        _create(client, f"/api/v1/namespaces/{namespace}/configmaps",
                {"metadata": {"name": name}, "data": {"greeting": "hello"}})
        _create(client, f"/api/v1/namespaces/{NAMESPACE}/configmaps",
                {"metadata": {"name": "watched"}, "data": {"seq": "-1"}})
        _create(client, f"/api/v1/namespaces/{NAMESPACE}/pods",
                {"metadata": {"name": EXEC_POD}, "spec": {"containers": [{"name": CONTAINER, "image": "busybox"}]}})
    sandbox = sim.sandbox_dir(NAMESPACE, EXEC_POD)
    _write_blocks(sandbox / EXEC_FILES["binary"], exec_bytes, os.urandom(BLOCK))
    _write_blocks(sandbox / EXEC_FILES["text"], exec_bytes, _log_block())
    _write_blocks(sim.log_file(NAMESPACE, EXEC_POD, CONTAINER), log_bytes, _log_block())
    return sim
