"""Issue 12: a bounded fuzz of what agents send (tests/resilience_fuzz.py) against both gateways of the rig.

A fixed seed and a few hundred cases: request lines and headers (bytes outside ASCII, huge,
duplicated, folded, contradicting Content-Length and Transfer-Encoding, half sent), JSON and YAML
bodies (deep, wide, invalid UTF-8, NaN, duplicate keys, alias bombs) and WebSocket frames on an
exec session (bad opcodes, oversized, fragmented control frames, wrong channels).  Never a 500,
never a hang past the bound, every error a ``Status`` (or the HTTP server's own 400, 408 or 431
and a close for what is not HTTP), and one completion event per answered request.
"""

import asyncio

from tests.resilience_fuzz import cases, problems, run_all, summary
from tests.resilience_load import settle

SEED = 12
CASES = 300
BOUND = 10.0  # seconds per case: the rig's header and body timeouts are 2 s


def test_fuzzed_requests_get_status_answers_and_one_completion_event_each(rig):
    results = asyncio.run(run_all([g.port for g in rig.gateways], rig.tls.ca_file, cases(SEED, CASES), bound=BOUND))
    rows = settle(rig, "fuzz/")
    events = [(agent, code) for agent, stage, code, _ in rows if stage == "ResponseComplete"]
    print(summary(results))
    found = problems(results, events)
    assert not found, "\n".join(found[:60])
