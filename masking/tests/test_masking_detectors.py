"""Free-text detectors: each with positive and negative examples, configuration, named values."""

import pytest

from masking import PLACEHOLDER, DetectorConfigError, Detectors
from masking.detectors import BUILTIN_NAMES, name_is_secret

M = PLACEHOLDER
PEM_BODY = (
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n"
    "7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFc\n"
)
JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0"
    ".c2lnbmF0dXJlLXNhLXRva2VuLWRlcGxveWVyLThiMmM"
)

# detector -> (text with a secret, expected masked text, similar text that is not a secret)
CASES = {
    "private-key": (
        f"key:\n-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}-----END RSA PRIVATE KEY-----\nok",
        f"key:\n-----BEGIN RSA PRIVATE KEY-----{M}-----END RSA PRIVATE KEY-----\nok",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    ),
    "jwt": (f"token {JWT} end", f"token {M} end", "eyJhbGciOi is only a header"),
    "aws-access-key-id": ("id AKIAIOSFODNN7EXAMPLE ok", f"id {M} ok", "AKIA is a prefix, AKIAshort"),
    "aws-secret-access-key": (
        "secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        f"secret_access_key: {M}",
        "secret_access_key_rotation: enabled",
    ),
    "gcp-api-key": ("key AIzaSyA1234567890abcdefghijklmnopqrstuv x", f"key {M} x", "AIza-too-short"),
    "gcp-oauth-token": ("ya29.a0AfH6SMBx3kZ1234567890abcdef", M, "ya29.short"),
    "azure-storage-key": (
        "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=" + "A" * 86 + "==;EndpointSuffix=core",
        f"DefaultEndpointsProtocol=https;AccountName=x;AccountKey={M};EndpointSuffix=core",
        "AccountName=myaccount;EndpointSuffix=core.windows.net",
    ),
    "azure-sas-signature": (
        "https://x.blob.core.windows.net/c?sv=2022-11-02&sig=abcdefghijklmnopqrstuvwxyz0123%3D",
        f"https://x.blob.core.windows.net/c?sv=2022-11-02&sig={M}",
        "sig=short",
    ),
    "azure-client-secret": (
        "client abc8Q~abcdefghijklmnopqrstuvwxyz0123456 x",
        f"client abc8Q~{M} x",
        "abc8Q~short",
    ),
    "github-token": ("ghp_" + "a1B2" * 9 + " and github_pat_" + "x" * 30, f"{M} and {M}", "ghp_short ghx_" + "a" * 36),
    "gitlab-token": ("glpat-abcdefghijklmnopqrst1", M, "glpat-short"),
    "slack-token": ("xoxb-1234567890-abcdefghij", M, "xoxz-1234567890-abcdefghij"),
    "slack-webhook": (
        "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX",
        f"https://hooks.slack.com/services/{M}",
        "https://hooks.slack.com/",
    ),
    "stripe-key": ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", M, "sk_live_ is a prefix"),
    "openai-anthropic-key": ("sk-proj-" + "Ab1" * 12, M, "sk-short-key"),
    "npm-token": ("npm_" + "a" * 36, M, "npm_install"),
    "pypi-token": ("pypi-AgEIcHlwaS5vcmc" + "A" * 60, M, "pypi-AgEIcHlwaS5vcmc"),
    "sendgrid-key": ("SG." + "a" * 22 + "." + "b" * 43, M, "SG.short.x"),
    "vault-token": ("hvs.CAESIJ1234567890abcdefghijklmn", M, "hvs.short"),
    "huggingface-token": ("hf_" + "a" * 34, M, "hf_short"),
    "digitalocean-token": ("dop_v1_" + "a1" * 32, M, "dop_v1_short"),
    "kubernetes-bootstrap-token": (
        "kubeadm join --token abcdef.0123456789abcdef",
        f"kubeadm join --token abcdef.{M}",
        "see www.example-domain.com and v1.2.3",
    ),
    "url-password": (
        "postgres://shop:s3cr3t-db-password-4f9a@db.shop.svc:5432/cart",
        f"postgres://shop:{M}@db.shop.svc:5432/cart",
        "http://[::1]:8080/path and https://user@host/",
    ),
    "authorization-header": ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {M}", "authorization: none"),
    "bearer-token": ("curl -H 'x: Bearer abcdefghijklmnop1234'", f"curl -H 'x: Bearer {M}'", "bearer of news"),
    "docker-auth": ('{"auths":{"r":{"auth":"dXNlcjpwYXNzd29yZA=="}}}', f'{{"auths":{{"r":{{"auth":"{M}"}}}}}}', '"auth": "x"'),
    "keyword": (
        "smtp.password=m4il-p4ss-7c1e db_secret: 'abc' API_KEY=\"k1\" token := t0k",
        f"smtp.password={M} db_secret: '{M}' API_KEY=\"{M}\" token := {M}",
        "kind: Secret; secretName: app-tls; password=${DB_PASSWORD}; tokens_used=42; key=value",
    ),
}


def test_every_builtin_detector_has_a_case():
    assert set(CASES) == set(BUILTIN_NAMES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_detector_masks_positive(name):
    text, expected, _ = CASES[name]
    counts = {}
    assert Detectors.from_config({"enabled": [name]}).mask_text(text, counts) == expected
    assert counts and set(counts) == {name}


@pytest.mark.parametrize("name", sorted(CASES))
def test_detector_leaves_negative(name):
    _, _, negative = CASES[name]
    counts = {}
    assert Detectors.default().mask_text(negative, counts) == negative
    assert counts == {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_masking_is_idempotent(name):
    text, _, _ = CASES[name]
    once = Detectors.default().mask_text(text, {})
    counts = {}
    assert Detectors.default().mask_text(once, counts) == once
    assert counts == {}


def test_other_detectors_do_not_fire_on_each_others_negatives_with_default_set():
    text, expected, _ = CASES["url-password"]
    assert Detectors.default().mask_text(text, {}) == expected


def test_json_escaped_private_key_in_a_service_account_file():
    body = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBg\\n-----END PRIVATE KEY-----\\n"}'
    masked = Detectors.from_config({"enabled": ["private-key"]}).mask_text(body, {})
    assert "MIIEvQIBADANBg" not in masked
    assert masked.startswith('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----')
    assert Detectors.default().mask_text(body, {}) == f'{{"type": "service_account", "private_key": "{M}"}}'


def test_non_ascii_text_survives():
    text = "grüße password=pässwort ok ✓"
    assert Detectors.default().mask_text(text, {}) == f"grüße password={M} ok ✓"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DB_PASSWORD", True),
        ("STRIPE_SECRET", True),
        ("github-token", True),
        ("smtp.password", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("api_key", True),
        ("DB_PASSWORD_FILE", False),
        ("secretName", False),
        ("tokenizer.json", False),
        ("LOG_LEVEL", False),
        ("TOKEN_TTL", False),
    ],
)
def test_name_is_secret(name, secret):
    assert name_is_secret(name) is secret


def test_mask_pair_masks_whole_value_by_name():
    counts = {}
    d = Detectors.default()
    assert d.mask_pair("DB_PASSWORD", "s3cr3t-db-password-4f9a", counts) == M
    assert d.mask_pair("DB_HOST", "db.shop.svc", counts) == "db.shop.svc"
    assert d.mask_pair("DB_PASSWORD", "", counts) == ""
    assert d.mask_pair("URL", "https://u:pw123@h/", counts) == f"https://u:{M}@h/"
    assert counts == {"keyword": 1, "url-password": 1}


def test_mask_pair_without_keyword_detector_uses_text_detectors_only():
    d = Detectors.from_config({"disabled": ["keyword"]})
    assert d.mask_pair("DB_PASSWORD", "hunter2", {}) == "hunter2"


def test_mask_argv_flags_and_assignments():
    argv = ["app", "--db-password", "hunter2", "--token=abc123", "--verbose", "--secret", "-x", "--level", "3"]
    counts = {}
    Detectors.default().mask_argv(argv, counts)
    assert argv == ["app", "--db-password", M, f"--token={M}", "--verbose", "--secret", "-x", "--level", "3"]
    assert counts == {"keyword": 2}


def test_from_config_selection():
    d = Detectors.from_config({"enabled": ["jwt", "keyword"], "disabled": ["keyword"]})
    assert d.names == {"jwt"}
    assert Detectors.from_config(None) == Detectors.default()
    assert Detectors.from_config({}) == Detectors.default()
    assert not Detectors.none().enabled
    assert Detectors.none().mask_text("password=x", {}) == "password=x"


def test_extra_detector_with_secret_group():
    d = Detectors.from_config(
        {"enabled": [], "extra": [{"name": "acme", "pattern": r"acme-id=(?P<secret>[0-9a-f]{8})\b"}]}
    )
    counts = {}
    assert d.mask_text("acme-id=deadbeef and acme-id=xyz", counts) == f"acme-id={M} and acme-id=xyz"
    assert counts == {"acme": 1}


def test_extra_detector_ignore_case_whole_match():
    d = Detectors.from_config({"enabled": [], "extra": [{"name": "corp", "pattern": "CORP-[0-9]{6}", "ignore_case": True}]})
    assert d.mask_text("id corp-123456.", {}) == f"id {M}."


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"enabled": ["nope"]}, "unknown detectors: nope"),
        ({"disabled": "jwt"}, '"disabled" must be a list'),
        ({"enabled": "some"}, '"enabled" must be "all" or a list'),
        ({"colour": 1}, "unknown detector settings: colour"),
        ({"extra": [{"name": "x", "pattern": "("}]}, "invalid pattern"),
        ({"extra": [{"name": "x", "pattern": "a*"}]}, "matches the empty string"),
        ({"extra": [{"name": "jwt", "pattern": "a"}]}, "clashes with a built-in"),
        ({"extra": [{"name": "Bad Name", "pattern": "a"}]}, "name must be"),
        ({"extra": [{"name": "x", "pattern": "a"}, {"name": "x", "pattern": "b"}]}, "must be unique"),
        ({"extra": "x"}, '"extra" must be a list'),
        (["jwt"], "must be an object"),
    ],
)
def test_from_config_errors(config, message):
    with pytest.raises(DetectorConfigError, match=message):
        Detectors.from_config(config)


def test_a_name_is_judged_once_then_remembered():
    from masking.detectors import name_is_secret

    before = name_is_secret.cache_info()
    assert name_is_secret("DB_PASSWORD_remembered") is True and name_is_secret("DB_PASSWORD_remembered") is True
    after = name_is_secret.cache_info()
    assert after.hits >= before.hits + 1 and after.maxsize == 4096
