"""docker-compose.yml describes production; no Docker engine runs here, so
check that what each service runs actually exists in the project."""

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from django.core.management import get_commands
from docker.utils.build import exclude_paths

from airlock.server import ReadLimits

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def load():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_production_shape():
    services = load()["services"]
    assert {"gateway", "worker", "beat", "postgres", "redis"} <= set(services)
    for name in ("gateway", "worker", "beat", "migrate"):
        env = services[name]["environment"]
        assert env["AIRLOCK_ENV"] == "production"
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://")


def test_each_project_command_exists():
    services = load()["services"]
    for name, service in services.items():
        if "build" not in service:
            continue
        command = service["command"]
        program = command[0]
        assert (BIN / program).exists() or shutil.which(program), f"{name}: {program} is not installed"
        if program == "python":
            assert command[1] == "manage.py" and (ROOT / "manage.py").exists()
            assert command[2] in get_commands(), f"{name}: manage.py {command[2]} does not exist"
        elif program == "uvicorn":
            module, _, attr = command[1].partition(":")
            assert hasattr(importlib.import_module(module), attr)
            http = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--http="))
            module, _, attr = http.partition(":")
            protocol = getattr(importlib.import_module(module), attr)
            assert issubclass(protocol, ReadLimits), f"{name}: the listener runs without airlock.server's read limits"
        elif program == "celery":
            app = importlib.import_module(command[command.index("-A") + 1]).celery_app
            assert command[command.index("-A") + 2] in {"worker", "beat"}
            assert app.main == "airlock"
        else:
            raise AssertionError(f"{name}: unexpected command {program}")


def test_dockerfile_installs_runtime_requirements():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.txt" in dockerfile


# What a developer's or CI's working tree holds besides the source: none of it may reach the image.
LOCAL_STATE = [
    ".demo/airlock.sqlite3", ".demo/airlock.sqlite3-wal", ".demo/gateway-keys.json", ".demo/tls/gateway.key",
    ".demo/kubeconfig", ".demo/cluster-kubeconfig", ".demo/agent-client-secret", ".demo/gateway.log",
    ".demo/kubesim/requests.jsonl", ".demo/kubesim/ca.key", ".var/airlock.sqlite3", ".var/static/admin/base.css",
    ".venv/bin/python", ".git/config", ".git/objects/pack/pack-1.pack", "tests/idp/node_modules/oidc-provider/index.js",
    "frontend/node_modules/htmx.org/dist/htmx.js", "gateway/__pycache__/proxy.cpython-311.pyc",
    ".pytest_cache/v/cache/nodeids", ".hypothesis/examples/x", "deploy/tls/gateway.key", "deploy/tls/gateway.crt",
    "db.sqlite3", ".env", "bench/out/gateway.log", "bench/out/tls/server.key", "prod.kubeconfig", "kubeconfig",
    "client-secret.txt",
]


def test_docker_build_context_is_the_tracked_source_without_local_state(tmp_path):
    """The Dockerfile copies the whole context: it must be the project's files and nothing else.

    docker-py's exclude_paths applies .dockerignore the way the Docker engine does.
    """
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    for path in [*tracked, ".dockerignore", *LOCAL_STATE]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    context = {path for path in exclude_paths(str(tmp_path), patterns) if (tmp_path / path).is_file()}
    assert sorted(context & set(LOCAL_STATE)) == []
    assert sorted(path for path in set(tracked) - context if not development_only(path)) == []  # the runtime source goes in
    assert sorted(path for path in context if development_only(path)) == []  # tests and tooling stay out


# Tracked, but for development only: never in the image.
DEVELOPMENT_ONLY = ("tests/", "kubesim/", "bench/", ".ci/", "deploy/kubernetes/", "deploy/demo.py", "requirements-dev.txt",
                    "conftest.py", "pytest.ini")


def development_only(path: str) -> bool:
    return path.startswith(DEVELOPMENT_ONLY) or "/tests/" in path
