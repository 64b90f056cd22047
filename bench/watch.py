"""Watch fan-out: N open watches, then timed changes; latency from the change to every watcher.

The changes are written straight to kubesim; each watcher records when the
event reached it (time.monotonic, same process), so a latency is
"PATCH sent" -> "event read by that watcher", including the client's own
work of reading N events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import httpx

from bench.httpraw import ChunkedLines, client_context, open_stream
from bench.stats import ms, percentile

NAMESPACE = "bench"
CONFIGMAP = "watched"
OPEN_CONCURRENCY = 50
ROUND_TIMEOUT = 60.0


class Fanout:
    def __init__(self, expected: int):
        self.expected = expected
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self.complete: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self.broken = 0

    def record(self, seq: int, when: float) -> None:
        got = self.arrivals[seq]
        got.append(when)
        if len(got) >= self.expected:
            self.complete[seq].set()


async def _watcher(reader, fanout: Fanout) -> None:
    decoder = ChunkedLines()
    try:
        while not decoder.finished:
            data = await reader.read(65536)
            when = time.monotonic()
            if not data:
                break
            for line in decoder.feed(data):
                event = json.loads(line)
                seq = (event["object"].get("data") or {}).get("seq")
                if event["type"] in ("ADDED", "MODIFIED") and seq is not None:
                    fanout.record(int(seq), when)
    except (ConnectionError, OSError, ValueError):
        pass
    fanout.broken += 1


async def run_fanout(base_url: str, token: str, ca_file, admin: httpx.AsyncClient, *, watchers: int, rounds: int,
                     settle: float, rss=None, open_timeout: float = ROUND_TIMEOUT) -> dict:
    """``base_url`` is the cluster as the watchers see it (kubesim, or the gateway's /k8s/<name>).

    Each watch starts just before the ConfigMap's last change, so its first
    event (seq -1) arrives at once: that is when a watch counts as
    established.  (daphne sends the response head only with the first body
    bytes, so an idle watch is otherwise indistinguishable from a stuck one.)
    """
    await _set_seq(admin, -1)
    response = await admin.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP}")
    response.raise_for_status()
    rv = int(response.json()["metadata"]["resourceVersion"]) - 1
    url = (f"{base_url}/api/v1/namespaces/{NAMESPACE}/configmaps?watch=1&resourceVersion={rv}"
           f"&fieldSelector=metadata.name%3D{CONFIGMAP}&timeoutSeconds=1800")
    context = client_context(ca_file)
    fanout = Fanout(watchers)
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    streams, tasks = [], []
    rss_before = rss() if rss else None

    async def open_one():
        async with gate:
            reader, writer, head = await open_stream(url, token, context)
            streams.append(writer)
            if head.status != 200:
                raise RuntimeError(f"watch answered {head.status}")
            tasks.append(asyncio.create_task(_watcher(reader, fanout)))

    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(open_one() for _ in range(watchers))), open_timeout)
        await asyncio.wait_for(fanout.complete[-1].wait(), open_timeout)
        established = time.monotonic() - started
        await asyncio.sleep(settle)
        rss_watching = rss() if rss else None
        rss_peak = rss_watching
        latencies, missing, round_max = [], 0, []
        for seq in range(rounds):
            sent = time.monotonic()
            await _set_seq(admin, seq)
            try:
                await asyncio.wait_for(fanout.complete[seq].wait(), ROUND_TIMEOUT)
            except asyncio.TimeoutError:
                pass
            got = [when - sent for when in fanout.arrivals[seq]]
            missing += watchers - len(got)
            latencies.extend(got)
            if got:
                round_max.append(max(got))
            if rss:
                rss_peak = max(rss_peak, rss())
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in streams:
            writer.transport.abort()
    result = {
        "watchers": watchers,
        "rounds": rounds,
        "establish_s": round(established, 2),
        "deliveries": len(latencies),
        "missing": missing,
        "broken_streams": fanout.broken,
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies, default=None)),
        "all_delivered_p50_ms": ms(percentile(round_max, 50)),
    }
    if rss:
        result.update(
            rss_before_mib=round(rss_before / 1024, 1),
            rss_watching_mib=round(rss_watching / 1024, 1),
            rss_peak_mib=round(rss_peak / 1024, 1),
            rss_per_watch_kib=round((rss_peak - rss_before) / watchers, 1),
        )
    return result


async def _set_seq(admin: httpx.AsyncClient, seq: int) -> None:
    response = await admin.patch(
        f"/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP}",
        content=json.dumps({"data": {"seq": str(seq)}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    response.raise_for_status()
