"""What the multi-process rigs share (tests/resilience_rig.py, tests/scaleout_rig.py, tests/e2e_workers):
loopback ports, a private Redis database, reading back the audit trail and kubesim's request log
(:class:`AuditReads`), and the worker processes of one multi-worker gateway.

:class:`Workers` stands where the scale-out rig's HAProxy stands when one gateway serves from
several worker processes (``uvicorn --workers N``): it names the workers (``w1``, ``w2``, ... by
pid order), tells which worker holds a client's connection (the kernel's socket table,
``/proc/net/tcp``, matched against each worker's file descriptors) and how many requests each has
counted (the Prometheus multiprocess files each worker writes, ``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flush_redis(address: tuple[str, int], database: int) -> None:
    """A previous run's channel-layer messages and broker queue must not reach this one's processes."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(f"SELECT {database}\r\nFLUSHDB\r\n".encode())
        sock.recv(64)


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux: /proc/<pid>/task/*/children)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    for task in tasks:
        try:
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(set(found))


def serving_workers(pid: int) -> list[int]:
    """uvicorn's worker processes under the supervisor ``pid`` (its children running the server)."""
    workers = []
    for child in children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"multiprocessing" in command and b"resource_tracker" not in command:
            workers.append(child)
    return workers


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return inodes
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def accepted_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server side of the loopback TCP connection ``client_port`` -> ``server_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                return inode
    return None


class AuditReads:
    """What both rigs read back: the audit rows and kubesim's log of a prefix's requests.  Needs
    ``postgres``, ``database`` and ``kubesim`` on the rig."""

    def audit_rows(self, user_agent_prefix: str) -> list[tuple]:
        """(user_agent, stage, response_code, response_reason) of every audit event of these requests."""
        import psycopg

        with psycopg.connect(self.postgres.url(self.database), connect_timeout=5) as db:
            return db.execute(
                "SELECT user_agent, stage, response_code, response_reason FROM audit_auditevent "
                "WHERE user_agent LIKE %s", (user_agent_prefix.replace("%", r"\%") + "%",),
            ).fetchall()

    def forwarded(self, user_agent_prefix: str) -> set[str]:
        """User-Agents of the requests kubesim logged as received from a gateway."""
        from kubesim import requestlog

        return {agent for record in self.kubesim.requests() for agent in requestlog.header(record, "user-agent")
                if agent.startswith(user_agent_prefix)}


class Workers:
    """The worker processes of one gateway (uvicorn's supervisor ``parent``) listening on ``port``.

    Quacks like tests.scaleout_rig.Balancer where the scale-out scenarios need it: ``servers``,
    ``port``, ``replica_of(client_port)`` and ``connections()`` (here: requests each worker counted).
    """

    def __init__(self, parent: int, port: int, metrics_dir: Path | None = None, expected: int = 2,
                 timeout: float = 60.0):
        self.parent = parent
        self.port = port
        self.metrics_dir = metrics_dir
        deadline = time.monotonic() + timeout
        while len(pids := serving_workers(parent)) < expected:
            assert time.monotonic() < deadline, f"{len(pids)} of {expected} workers under {parent}"
            time.sleep(0.1)
        self.pids = pids
        self.servers = {f"w{n}": pid for n, pid in enumerate(pids, 1)}

    def name_of(self, pid: int) -> str | None:
        return next((name for name, known in self.servers.items() if known == pid), None)

    def replica_of(self, client_port: int) -> str | None:
        """The worker holding the connection from 127.0.0.1:``client_port`` (None: not open)."""
        inode = accepted_inode(self.port, client_port)
        if inode is None:
            return None
        for name, pid in self.servers.items():
            if inode in _socket_inodes(pid):
                return name
        return None

    def connections(self) -> dict[str, int]:
        """Requests each worker has counted so far (``airlock_requests_total`` in its multiprocess file)."""
        from prometheus_client.mmap_dict import MmapedDict

        counts = {name: 0 for name in self.servers}
        if self.metrics_dir is None:
            return counts
        for name, pid in self.servers.items():
            path = self.metrics_dir / f"counter_{pid}.db"
            if not path.exists():
                continue
            for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
                if json.loads(key)[1] == "airlock_requests_total":
                    counts[name] += int(value)
        return counts
