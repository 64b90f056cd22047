"""The container image, checked from its Dockerfile (no container engine runs here).

dockerfile-parse reads the Dockerfile as Docker does (continuation lines, ARG substitution in FROM),
so the checks below see instructions, not text that happens to contain a word.
"""

import functools
import json
import re
import socket
import subprocess
import tempfile
from pathlib import Path

from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

from deploy import healthcheck

ROOT = Path(__file__).resolve().parents[2]

BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libpq-dev|rustc|cargo|"
                         r"apt-get|apt|curl|wget|git)\b")


def stages() -> list[dict]:
    """Each stage: its FROM line's image and name, and its instructions."""
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    result: list[dict] = []
    images = iter(parser.parent_images)
    for item in parser.structure:
        if item["instruction"] == "FROM":
            name = item["value"].split()[-1] if " as " in item["value"].lower() else None
            result.append({"image": next(images), "name": name, "instructions": []})
        elif result:
            result[-1]["instructions"].append(item)
    return result


def instructions(stage: dict, kind: str) -> list[str]:
    return [item["value"] for item in stage["instructions"] if item["instruction"] == kind]


def test_multi_stage_on_a_pinned_slim_base():
    built = stages()
    assert len(built) >= 2, "a build stage and a runtime stage"
    for stage in built:
        # A version tag (not "latest", not a bare major) and a digest.
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", stage["image"]), stage["image"]
    runtime = built[-1]
    assert any("--from=" in copy for copy in instructions(runtime, "COPY")), "the runtime stage copies from the build"


def test_runtime_stage_runs_as_an_unprivileged_user():
    runtime = stages()[-1]
    users = instructions(runtime, "USER")
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit() and int(user) >= 10000
    group = users[-1].split(":")[1] if ":" in users[-1] else ""
    assert group.isdigit() and int(group) != 0


def test_runtime_stage_has_no_build_tools_or_development_dependencies():
    runtime = stages()[-1]
    for item in runtime["instructions"]:
        if item["instruction"] in {"RUN", "COPY", "ADD"}:
            assert not BUILD_TOOLS.search(item["value"]), f"runtime stage: {item['content'].strip()}"
            assert "requirements-dev" not in item["value"]
            assert "pip install" not in item["value"], "packages are installed in the build stage"
    for stage in stages():
        for item in stage["instructions"]:
            assert "requirements-dev" not in item["value"], "development requirements are never installed"
    # The source comes in through the build stage; the context itself (and so the image) has no tests.
    assert not [copy for copy in instructions(runtime, "COPY") if "--from=" not in copy]


def test_healthcheck_asks_the_gateway_livez_with_python():
    runtime = stages()[-1]
    checks = instructions(runtime, "HEALTHCHECK")
    assert len(checks) == 1
    command = json.loads(checks[0].split("CMD", 1)[1])
    assert command[0] == "python" and command[1] == "/app/deploy/healthcheck.py"
    assert healthcheck.DEFAULT_URL == "https://127.0.0.1:8443/livez"
    # The script goes into the image: .dockerignore keeps it.
    assert "deploy/healthcheck.py" in context_files()


def test_the_default_command_is_the_gateway_with_read_limits():
    runtime = stages()[-1]
    command = json.loads(instructions(runtime, "CMD")[-1])
    assert command[:2] == ["uvicorn", "airlock.asgi:application"]
    assert "--http=airlock.server:HttpToolsProtocol" in command and "--ws=wsproto" in command
    assert "--no-proxy-headers" in command  # the audit trail records the peer, never X-Forwarded-For
    assert "--no-server-header" in command  # agents see kube-apiserver's fields, no "server: uvicorn"


# Paths a working tree may hold besides the tracked source (credentials, local state) and development files.
UNTRACKED = [".env.production", "deploy/tls/gateway.key", "deploy/kubernetes/secrets.env", "kubeconfig",
             ".git/config", ".venv/bin/python", ".demo/kubeconfig", "node_modules/x/index.js"]
KEPT_OUT = [*UNTRACKED, "tests/deploy/test_dockerfile.py", "gateway/tests/test_policy.py", "kubesim/api/api.json",
            "kubesim/server.py", "requirements-dev.txt", "deploy/kubernetes/base/kustomization.yaml", "deploy/demo.py",
            "bench/run.py", "conftest.py"]


@functools.cache
def context_files() -> frozenset[str]:
    """The build context docker would send for this working tree (docker-py applies .dockerignore as the engine does)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        for path in [*tracked, *KEPT_OUT, "deploy/healthcheck.py", ".dockerignore"]:
            (Path(tmp) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / path).write_text("x")
        patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
        return frozenset(path for path in exclude_paths(tmp, patterns) if (Path(tmp) / path).is_file())


def test_build_context_is_the_runtime_source_without_secrets_or_development_files():
    """What `COPY . /app` can see: credentials and local state never, tests and tooling not either."""
    context = context_files()
    assert sorted(path for path in KEPT_OUT if path in context) == []
    for path in ("manage.py", "requirements.txt", "airlock/settings.py", "airlock/asgi.py", "gateway/app.py",
                 "approvals/hold.py", "audit/recorder.py", "connections/registry.py", "deploy/healthcheck.py",
                 "static/vendor"):
        assert path in context or any(name.startswith(path + "/") for name in context), path


def test_healthcheck_script_against_a_tls_livez(kubesim, tmp_path):
    """kubesim serves /livez over TLS with a certificate for its own CA: the script's loopback check accepts it."""
    assert healthcheck.main([f"{kubesim.url}/livez"]) == 0
    assert healthcheck.main([f"{kubesim.url}/no-such-path"]) == 1
    assert healthcheck.main([f"https://127.0.0.1:{free_port()}/livez"]) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
