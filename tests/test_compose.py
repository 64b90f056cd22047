"""docker-compose.yml describes production; no Docker engine runs here, so
check that what each service runs actually exists in the project."""

import importlib
import shutil
import sys
from pathlib import Path

import yaml
from django.core.management import get_commands

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
