"""Small-request load with wrk (Debian's package, installed on first use).

wrk is a C load generator (epoll, keep-alive connections), so it is not the
bottleneck a Python client would be.  A Lua script adds the bearer token
and prints the summary as one JSON line, which is parsed instead of wrk's
human-readable output.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MARKER = "BENCH_JSON "

LUA = r"""
local token = os.getenv("BENCH_WRK_TOKEN") or ""
wrk.headers["Accept"] = "application/json"
if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def ensure_wrk() -> str:
    """Path of wrk; installs Debian's package (apt-get update first) when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}); wrk is needed:\n{result.stderr[-2000:]}")
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still not on PATH after apt-get install wrk")
    return found


@dataclass(frozen=True)
class Cell:
    """One wrk run's summary."""

    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict
    wrk_cpu_cores: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def parse_summary(output: str, connections: int, cpu_seconds: float) -> Cell:
    """The JSON line printed by the Lua ``done`` hook."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER):])
            break
    else:
        raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
    seconds = data["duration_us"] / 1e6
    return Cell(
        connections=connections,
        requests=data["requests"],
        seconds=round(seconds, 3),
        rps=round(data["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=round(data["mean_us"] / 1000, 3),
        max_ms=data["max_us"] / 1000,
        errors=data["errors"],
        wrk_cpu_cores=round(cpu_seconds / seconds, 2) if seconds else 0.0,
    )


class Wrk:
    def __init__(self, workdir: Path, threads: int):
        self.binary = ensure_wrk()
        self.script = workdir / "bench.lua"
        self.script.write_text(LUA)
        self.threads = threads

    def run(self, url: str, token: str, connections: int, seconds: int) -> Cell:
        """``wrk --latency`` for ``seconds`` with ``connections`` keep-alive connections."""
        threads = max(1, min(self.threads, connections))
        argv = [self.binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout=10s", "--latency",
                "-s", str(self.script), url]
        # The token reaches the Lua script through the environment, not argv.
        env = dict(os.environ, BENCH_WRK_TOKEN=token)
        before = _children_cpu()
        result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"wrk exited {result.returncode}:\n{result.stderr[-2000:]}")
        return parse_summary(result.stdout, connections, _children_cpu() - before)


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
