"""bench/audit_writers.py runs in the bench's quick profile and renders its scaling table (figures not judged)."""

from bench import audit_writers
from bench.run import QUICK


def test_the_quick_audit_writers_cell_runs_and_renders_its_table():
    result = audit_writers.measure(QUICK)
    text = audit_writers.table(result)
    assert text.startswith("### Audit appends per second against the number of writers (PostgreSQL)")
    if "skipped" in result:  # no PostgreSQL here: the table says so rather than failing the bench
        assert "Not measured: no PostgreSQL" in text
        return
    [cell] = result["cells"]
    assert (cell["mode"], cell["writers"]) == ("completions", 1)
    assert cell["events"] > 0 and cell["events_per_transaction"] > 0
    assert cell["serving_cpu_us_per_event"] > 0 and cell["writer_cpu_us_per_event"] > 0
    assert result["verify_audit"] == 0  # every event the writer appended is in an intact chain
    assert f"| {cell['events_per_s']:,} |" in text
