"""`python -m bench.small_get` stays runnable: the small-GET cells alone, A/B against another tree.

Structure only (a one-second cell means nothing): both trees' production gateways answered every
request with 200 (wrk errors stop the run) and a CPU figure per request came out for each.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_small_get_compares_two_trees(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
    result = subprocess.run([sys.executable, "-m", "bench.small_get", "--tree", str(base), "--runs", "1",
                             "--seconds", "1", "--connections", "1"], cwd=REPO, capture_output=True, text=True,
                            timeout=280)
    assert result.returncode == 0, result.stderr[-4000:]
    medians = dict(re.findall(r"^(this|base) c=1: median (\d+) us CPU per request", result.stdout, re.M))
    assert set(medians) == {"this", "base"} and all(int(us) > 0 for us in medians.values())
