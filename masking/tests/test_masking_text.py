"""The streaming text masker (logs, exec/attach output): splits, holds, flushes, limits."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from masking import MAX_SECRET_BYTES, PLACEHOLDER, Detectors, TextMasker, text_stream_masker

M = PLACEHOLDER.encode()
SECRETS = [
    b"s3cr3t-db-password-4f9a",
    b"kubesim-aws-secret-2d7f",
    b"ghp_a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2",
    b"MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0t",
    b"eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0",
]
LOG = (
    b"2026-11-20T09:00:00Z INFO cart service starting\n"
    b"2026-11-20T09:00:01Z DEBUG connecting to postgres://shop:s3cr3t-db-password-4f9a@db.shop.svc:5432/cart\n"
    b"[default]\naws_access_key_id=AKIAKUBESIMEXAMPLE\naws_secret_access_key=kubesim-aws-secret-2d7f\n"
    b"push with ghp_a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2 done\n"
    b"-----BEGIN RSA PRIVATE KEY-----\n"
    b"MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0t\nRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7\n"
    b"-----END RSA PRIVATE KEY-----\n"
    b"Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0.c2ln\n"
    b"2026-11-20T09:00:01Z INFO cart service ready on :8080\n/ # "
)


def one_shot(data: bytes, detectors=None) -> bytes:
    masker = TextMasker(detectors or Detectors.default())
    return masker.feed(data) + masker.flush()


def chunked(data: bytes, cuts, detectors=None, **kw) -> tuple[bytes, TextMasker]:
    masker = TextMasker(detectors or Detectors.default(), **kw)
    out, prev = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out.append(masker.feed(data[prev:cut]))
        prev = cut
    out.append(masker.flush())
    return b"".join(out), masker


def assert_clean(out: bytes):
    for secret in SECRETS:
        assert secret not in out


def test_log_is_masked_and_keeps_its_structure():
    out = one_shot(LOG)
    assert_clean(out)
    assert out.startswith(b"2026-11-20T09:00:00Z INFO cart service starting\n")
    assert b"postgres://shop:" + M + b"@db.shop.svc:5432/cart\n" in out
    assert b"-----BEGIN RSA PRIVATE KEY-----" + M + b"-----END RSA PRIVATE KEY-----\n" in out
    assert out.endswith(b"ready on :8080\n/ # ")


def test_report_counts_kinds_never_values():
    masker = TextMasker(Detectors.default())
    masker.feed(LOG)
    masker.flush()
    counts = masker.report.counts
    assert counts["url-password"] == 1 and counts["private-key"] == 1 and counts["github-token"] == 1
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in counts.items())
    assert not any(secret.decode() in repr(masker.report) for secret in SECRETS)


def test_one_byte_feeds_give_the_same_output():
    assert chunked(LOG, range(1, len(LOG)))[0] == one_shot(LOG)


def test_secret_split_at_every_position():
    for text in (b"x password=s3cr3t-db-password-4f9a y\n", b"url http://u:s3cr3t-db-password-4f9a@h/ ok\n"):
        expected = one_shot(text)
        assert b"s3cr3t" not in expected
        for cut in range(1, len(text)):
            assert chunked(text, [cut])[0] == expected, cut


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(LOG) - 1), max_size=40))
def test_any_chunking_gives_the_one_shot_output(cuts):
    out, _ = chunked(LOG, cuts)
    assert out == one_shot(LOG)
    assert_clean(out)


def test_random_websocket_frames_of_a_big_stream():
    rnd = random.Random(7)
    data = b"".join(rnd.choice([LOG, b"noise line without secrets\n" * 50]) for _ in range(40))
    cuts = rnd.sample(range(1, len(data)), 300)
    out, _ = chunked(data, cuts)
    assert out == one_shot(data)
    assert_clean(out)


def test_prompts_and_complete_lines_are_not_held():
    masker = TextMasker(Detectors.default())
    assert masker.feed(b"ready\n") == b"ready\n"
    assert masker.feed(b"/ # ") == b"/ # "
    assert masker.feed(b"ls -la\r\n") == b"ls -la\r\n"
    assert masker.held == 0


def test_a_started_secret_is_held_until_it_ends():
    masker = TextMasker(Detectors.default())
    assert masker.feed(b"db password=s3cr3t-db") == b"db "
    assert masker.held > 0
    assert masker.feed(b"-password-4f9a\nnext") == b"password=" + M + b"\nnex"
    assert masker.held == 1  # "t" may start "token"
    assert masker.feed(b" line\n") == b"t line\n"


def test_flush_masks_a_secret_that_has_started():
    masker = TextMasker(Detectors.default())
    out = masker.feed(b"token: ghp_a1B2a1B2a1B2") + masker.flush()
    assert out == b"token: " + M


def test_flush_releases_what_is_not_a_secret_yet():
    masker = TextMasker(Detectors.default())
    assert masker.feed(b"Enter passphrase: ") == b"Enter "
    assert masker.flush() == b"passphrase: "
    masker = TextMasker(Detectors.default())
    assert masker.feed(b"high") + masker.flush() == b"high"


def test_value_after_an_idle_flush_is_still_masked():
    masker = TextMasker(Detectors.default())
    out = masker.feed(b"password=") + masker.flush()
    out += masker.feed(b"s3cr3t-db-password-4f9a\n") + masker.flush()
    assert out == b"password=" + M + b"\n"


def test_continuation_of_a_flushed_secret_is_masked():
    masker = TextMasker(Detectors.default())
    out = masker.feed(b"ghp_a1B2a1B2a1B2a1B2a1B2") + masker.flush()
    out += masker.feed(b"a1B2a1B2a1B2a1B2 rest\n")
    assert out == M + b" rest\n"


def test_hold_limit_masks_an_endless_candidate_and_its_continuation():
    masker = TextMasker(Detectors.default(), max_hold=256)
    out = masker.feed(b"log -----BEGIN RSA PRIVATE KEY-----\n")
    body = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n" * 20
    for i in range(0, len(body), 50):
        out += masker.feed(body[i : i + 50])
    out += masker.feed(b"-----END RSA PRIVATE KEY-----\nafter\n") + masker.flush()
    assert b"QUJDREVG" not in out
    assert out.startswith(b"log -----BEGIN RSA PRIVATE KEY-----" + M)
    assert out.endswith(b"-----END RSA PRIVATE KEY-----\nafter\n")
    assert masker.held == 0


def test_hold_limit_end_marker_split_across_feeds():
    masker = TextMasker(Detectors.default(), max_hold=64)
    out = masker.feed(b"-----BEGIN EC PRIVATE KEY-----\n" + b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n" * 4)
    out += masker.feed(b"QUJD\n---") + masker.feed(b"--EN") + masker.feed(b"D EC PRIVATE KEY-----\nafter\n")
    out += masker.flush()
    assert out == b"-----BEGIN EC PRIVATE KEY-----" + M + b"-----END EC PRIVATE KEY-----\nafter\n"


def test_default_hold_covers_a_large_pem_split_in_frames():
    body = b"".join(b"%064x\n" % i for i in range(200))  # ~13 KiB body, below MAX_SECRET_BYTES
    assert len(body) < MAX_SECRET_BYTES
    text = b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"
    out, _ = chunked(text, range(1000, len(text), 1000))
    assert out == b"-----BEGIN PRIVATE KEY-----" + M + b"-----END PRIVATE KEY-----\n"


def test_binary_output_without_secrets_passes_unchanged():
    data = bytes(random.Random(3).randrange(256) for _ in range(20000))
    out, _ = chunked(data, range(997, len(data), 997))
    assert out == one_shot(data)
    assert b"".join(TextMasker(Detectors.none()).feed(data[i : i + 100]) for i in range(0, len(data), 100)) == data


def test_no_detectors_is_a_pass_through():
    masker = text_stream_masker(Detectors.none())
    assert masker.feed(LOG) == LOG
    assert masker.flush() == b""
