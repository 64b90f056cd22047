"""bench/bench_masking.py keeps working: run(quick=True) returns the figures bench/run.py reports."""

import json

from bench.bench_masking import configmap_list_body, log_body, main, run, secret_list_body


def test_quick_run_reports_every_figure():
    results = run(quick=True)
    json.dumps(results)
    lst, log = results["secret_list"], results["log_stream"]
    assert lst["items"] == 500 and lst["masked_values"]["secret-data"] == 1000
    for key in ("passthrough_mb_s", "json_roundtrip_mb_s", "masked_mb_s", "overhead_vs_json_roundtrip", "within_target"):
        assert key in lst
    assert log["masked_values"]["url-password"] >= 1
    for key in ("masked_mb_s", "small_chunks_masked_mb_s", "overhead_vs_passthrough", "masked_with_values_mb_s",
                "small_chunks_masked_with_values_mb_s"):
        assert key in log
    assert "masked_with_values_mb_s" in lst and log["masked_values_with_values"]["secret-value"] >= 1
    cms = results["configmap_list"]
    assert cms["masked_values"]["secret-value"] == 5 and "masked_with_values_mb_s" in cms
    assert {size["secrets"] for size in results["values_build"].values()} == {100, 500}


def test_inputs_have_the_promised_shape():
    doc = json.loads(secret_list_body(3))
    assert doc["kind"] == "SecretList" and len(doc["items"]) == 3 and "kind" not in doc["items"][0]
    assert len(log_body(10_000)) == 10_000
    cms = json.loads(configmap_list_body(200))
    assert cms["kind"] == "ConfigMapList" and sum("copied" in item["data"] for item in cms["items"]) == 2


def test_main_prints(capsys):
    assert main(["--quick"]) == 0
    assert "x the round trip" in capsys.readouterr().out
