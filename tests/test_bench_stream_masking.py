"""bench/stream_masking.py runs in its quick profile and renders its tables (figures are not asserted)."""

from bench.run import QUICK
from bench.stream_masking import VALUE_COUNTS, measure, table


def test_quick_stream_masking_bench_measures_every_row_and_renders_both_tables():
    data = measure(QUICK)
    assert [row["values"] for row in data["scaling"]] == list(VALUE_COUNTS)
    for row in data["scaling"]:
        assert all(row[f"{kind}_{k}k_mb_s"] > 0 for kind in ("log", "binary") for k in (4, 64))
    targets = data["targets"]
    assert targets["secret_list_1000_values"]["mb_s"] > 0 and targets["log_4k_1000_values_mb_s"] > 0
    assert set(targets["exec_tap_1000_values"]) == {"binary_mb_s", "text_mb_s"}
    text = table(data)
    assert "| 10,000 |" in text and "log stream, 4 KiB chunks, 1,000 values" in text and "exec tap, random bytes" in text
