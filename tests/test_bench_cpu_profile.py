"""bench/cpu_profile.py charges each py-spy sample to the stage that spent it, not to the server that started it."""

from bench import cpu_profile
from bench.cpu_profile import EVENT_LOOP, OTHER, stage_of, stages

ROOT = ["<module> (<string>:1)", "subprocess_started (uvicorn/_subprocess.py:80)", "Server.run (uvicorn/server.py:86)",
        "asyncio_run (uvicorn/_compat.py:30)", "Runner.run (asyncio/runners.py:118)"]


def stage(*frames):
    return stage_of(ROOT + list(frames))


def test_the_deepest_frame_of_a_stage_decides():
    assert stage("GatewayApp.http (gateway/app.py:240)", "HttpForwarder.forward (gateway/responses.py:132)",
                 "masked_whole (gateway/responses.py:56)", "Literals.find (masking/literals.py:108)").startswith("masking")
    assert stage("GatewayApp.http (gateway/app.py:240)", "RequestMetrics.completed (gateway/metrics.py:86)",
                 "MmapedValue.inc (prometheus_client/values.py:115)").startswith("metrics")
    assert stage("GatewayApp.parse (gateway/app.py:116)").startswith("the other gateway stages")


def test_the_servers_own_frames_under_every_sample_are_not_a_stage():
    assert stage() == EVENT_LOOP  # uvloop's own work: nothing above Runner.run
    assert stage("HttpToolsProtocol.data_received (airlock/server.py:333)").startswith("HTTP server")
    writer = ["main (audit/writer.py:470)", "Runner.run (asyncio/runners.py:118)"]
    assert stage_of(writer) == EVENT_LOOP
    assert stage_of(writer + ["_msgspec_canonical (audit/chain.py:131)"]).startswith("audit chain")


def test_asyncio_under_a_stage_is_that_stage_and_alone_is_the_event_loop():
    assert stage("WriterChannel._flush (audit/channel.py:162)",
                 "StreamWriter.write (asyncio/streams.py:343)").startswith("audit hand-over")
    assert stage("Timeout.reschedule (asyncio/timeouts.py:71)") == EVENT_LOOP
    assert stage("Signal.send (django/dispatch/dispatcher.py:170)") == OTHER


def test_a_thread_of_its_own_is_classified_by_its_frames():
    total, counts = stages(
        "thread (1): MainThread;" + ";".join(ROOT) + " 3\n"
        "thread (2): ThreadPoolExecutor-0_0;_worker (concurrent/futures/thread.py:81);"
        "Connection.wait (psycopg/connection.py:495) 5\n"
        "garbage line\n")
    assert total == 8 and counts == {EVENT_LOOP: 3, "database: psycopg, Django's ORM": 5}


def test_render_gives_microseconds_per_get_from_each_roles_cpu():
    cell = {"roles": {"worker": {"processes": 2, "us_per_request": 400.0, "samples": 100,
                                 "stages": {"masking (masking/)": 0.25, EVENT_LOOP: 0.75}},
                      "writer": {"processes": 1, "us_per_request": 100.0, "samples": 50,
                                 "stages": {"database: psycopg, Django's ORM": 1.0}}},
            "failures": []}
    table = cpu_profile.render({"1": cell, "32": cell})
    assert "| masking (masking/) | 100 (25%) | 100 (25%) |" in table
    assert "| database: psycopg, Django's ORM | 100 (100%) | 100 (100%) |" in table
    assert "**400** (100 samples)" in table
    assert cpu_profile.render({"unavailable": "no py-spy"}) == "Not measured: no py-spy."
