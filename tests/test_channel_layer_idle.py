"""The Redis channel layer as settings configure it: a receive on an idle channel waits, it does not fail.

channels-redis blocks 5 s in BZPOPMIN per round on an idle channel, and redis-py 8 reads with a 5 s socket
timeout by default: unconfigured, a receive raised redis.exceptions.TimeoutError after 5 s of silence, which
restarted the gateways' airlock.leases listener (approvals.live) and lost what was sent meanwhile (issue 15's
scale-out test).  Real Redis on 127.0.0.1:6379 (.ci/run starts it), REDIS_URL's database or 7; a process of
its own, so the settings are built with REDIS_URL whatever this run's are.
"""

import subprocess
import sys

from tests.resilience_rig import REDIS_DB, ROOT, base_env

PROBE = """
import asyncio, django
django.setup()
from channels.layers import get_channel_layer

async def main():
    layer = get_channel_layer()
    channel = await layer.new_channel("idle-probe.")
    try:
        await asyncio.wait_for(layer.receive(channel), 7)
    except Exception as exc:
        print(type(exc).__module__, type(exc).__name__)

asyncio.run(main())
"""


def test_a_receive_on_an_idle_channel_outlasts_one_blocking_round():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=base_env(REDIS_URL=f"redis://127.0.0.1:6379/{REDIS_DB}"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "builtins TimeoutError", result.stdout  # wait_for's, after 7 s: not redis's
