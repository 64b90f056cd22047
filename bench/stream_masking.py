"""Per-byte cost of masking and of the exec stream path, in process (issue 16, items 4 and 5).

``measure(profile) -> dict`` (called by bench/run.py) and ``python -m bench.stream_masking
[--quick]``, which prints the tables.  Sans-IO: the maskers and the exec tap are fed the bytes
in the chunk sizes they meet in the gateway, so the figures are the per-byte work alone (no TLS,
no WebSocket framing).  Each figure is MB (10^6 bytes) per CPU second of this process, the least
CPU time of a few runs: on a shared machine wall time mostly measures the other processes.

- Scaling: a log stream and random bytes (``kubectl cp``'s tar is mostly that) through the
  stream masker, in 4 KiB and 64 KiB chunks, with 100, 1,000 and 10,000 known Secret values
  (masking by value: half passwords, half tokens), and what building each set costs.
- Targets (>= 100 MB/s each): the 5,000-Secret list and the log stream in 4 KiB chunks, with
  1,000 known values; the exec tap (masking stdout with 1,000 values, then recording the frames)
  for random bytes and text in 16 KiB frames.  The exec figure through the running gateway
  (TLS, WebSocket relay) is bench/run.py's ``exec`` table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench.bench_masking import _chunks, log_body, secret_list_body
from gateway.streams import StreamTap
from kube.requestinfo import parse
from masking import Detectors, SecretValues, response_masker, text_stream_masker
from masking.literals import HYPERSCAN_MAX_PATTERNS

VALUE_COUNTS = (100, 1000, 10000)
TARGET_MB_S = 100
EXEC_FRAME = 16 * 1024
EXIT = b'\x03{"metadata":{},"status":"Success"}'


def known_values(n: int) -> SecretValues:
    """``n`` values, as the gateway learns them: n/2 Secrets with a password and a token each."""
    return SecretValues.build(
        ("shop", f"app-{i}", [f"s3cr3t-db-password-{i:04x}".encode(), f"tok-{i:05d}-Zq8Lw2Rt".encode()])
        for i in range(n // 2)
    )


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return max(best, 1e-6)


def _stream(detectors: Detectors, chunks: list[bytes]) -> None:
    masker = text_stream_masker(detectors)
    for chunk in chunks:
        masker.feed(chunk)
    masker.flush()


def _rate(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e6, 1)


def scaling(size: int, repeat: int, counts=VALUE_COUNTS) -> list[dict]:
    bodies = {"log": log_body(size), "binary": os.urandom(size)}
    rows = []
    for n in counts:
        started = time.process_time()
        values = known_values(n)
        build = time.process_time() - started
        detectors = Detectors.default().with_values(values)
        engine = "Hyperscan" if values.forms <= HYPERSCAN_MAX_PATTERNS else "aho-corasick NFA"
        row = {"values": values.values, "build_ms": round(build * 1000, 1), "form_bytes": values.form_bytes,
               "engine": engine}
        for name, body in bodies.items():
            for chunk in (4096, 65536):
                chunks = _chunks(body, chunk)
                seconds = _best(lambda: _stream(detectors, chunks), repeat)
                row[f"{name}_{chunk // 1024}k_mb_s"] = _rate(len(body), seconds)
        rows.append(row)
    return rows


def secret_list(items: int, repeat: int, values: SecretValues) -> dict:
    body = secret_list_body(items)
    chunks = _chunks(body, 64 * 1024)
    info = parse("GET", "/api/v1/secrets", "limit=0")

    def masked():
        masker = response_masker(info, 200, "application/json", mask_secrets=True, detectors=Detectors.default(),
                                 values=values)
        for chunk in chunks:
            masker.feed(chunk)
        masker.close()

    return {"items": items, "body_bytes": len(body), "mb_s": _rate(len(body), _best(masked, repeat))}


def exec_tap(size: int, repeat: int, values: SecretValues) -> dict:
    """StreamTap.from_cluster for a whole ``cat``: stdout masked, frames recorded, the exit status."""
    info = parse("GET", "/api/v1/namespaces/shop/pods/web/exec", "command=cat&stdout=true")
    detectors = Detectors.default().with_values(values)
    out = {}
    for name, body in (("binary", os.urandom(size)), ("text", log_body(size))):
        frames = [b"\x01" + body[i : i + EXEC_FRAME] for i in range(0, len(body), EXEC_FRAME)]

        def run():
            tap = StreamTap(info, "v5.channel.k8s.io", "command=cat", detectors)
            for frame in frames:
                tap.from_cluster(frame)
            tap.from_cluster(EXIT)
            tap.recording(1.0)

        out[f"{name}_mb_s"] = _rate(len(body), _best(run, repeat))
    return out


def measure(profile) -> dict:
    """Every figure above as plain data; the quick profile (CI's smoke run) uses small inputs once."""
    quick = profile.name == "quick"
    size, repeat = (256 * 1024, 1) if quick else (8 * 1000 * 1000, 3)
    thousand = known_values(1000)
    log = log_body(size)
    targets = {
        "secret_list_1000_values": secret_list(500 if quick else 5000, repeat, thousand),
        "log_4k_1000_values_mb_s": _rate(
            len(log), _best(lambda: _stream(Detectors.default().with_values(thousand), _chunks(log, 4096)), repeat)),
        "exec_tap_1000_values": exec_tap(size * (1 if quick else 4), repeat, thousand),
    }
    return {"quick": quick, "bytes": size, "scaling": scaling(size, repeat), "targets": targets,
            "target_mb_s": TARGET_MB_S}


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def table(data: dict) -> str:
    """The markdown of both tables, for bench/RESULTS.md."""
    t = data["targets"]
    target = data["target_mb_s"]

    def met(rate):
        return "yes" if rate >= target else "**no**"

    lst = t["secret_list_1000_values"]
    rows = [
        [f"{lst['items']:,}-Secret list, 1,000 values", lst["mb_s"], met(lst["mb_s"])],
        ["log stream, 4 KiB chunks, 1,000 values", t["log_4k_1000_values_mb_s"], met(t["log_4k_1000_values_mb_s"])],
        ["exec tap, random bytes (mask + record)", t["exec_tap_1000_values"]["binary_mb_s"],
         met(t["exec_tap_1000_values"]["binary_mb_s"])],
        ["exec tap, text (mask + record)", t["exec_tap_1000_values"]["text_mb_s"],
         met(t["exec_tap_1000_values"]["text_mb_s"])],
    ]
    scaling_rows = [
        [f"{r['values']:,}", r["engine"], r["build_ms"], r["form_bytes"], r["log_4k_mb_s"], r["log_64k_mb_s"],
         r["binary_4k_mb_s"], r["binary_64k_mb_s"]]
        for r in data["scaling"]
    ]
    return "\n".join([
        f"Per-byte work in process, MB per CPU second (best of runs; {data['bytes']:,} bytes per stream):",
        "",
        _table(["masking", "MB/s", f">= {target} MB/s"], rows),
        "",
        "Masking throughput against the number of known Secret values (stream masker, every detector on):",
        "",
        _table(["values", "engine", "build ms", "form bytes", "log 4 KiB", "log 64 KiB", "random 4 KiB",
                "random 64 KiB"], scaling_rows),
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_masking", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one repetition")
    parser.add_argument("--json", action="store_true", help="only the figures, as one JSON document")
    args = parser.parse_args(argv)
    profile = type("Profile", (), {"name": "quick" if args.quick else "full"})()
    data = measure(profile)
    if not args.json:
        print(table(data))
    print(json.dumps(data, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
