"""One page shell and one front-end package (issue 14): every page extends templates/base.html,
and static/vendor/ holds exactly what frontend/package.json pins."""

import json
import re
import subprocess
from pathlib import Path

from django.conf import settings
from django.template.loader import get_template

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "static" / "vendor"
FRONTEND = ROOT / "frontend"


def template_dirs() -> list[Path]:
    return [ROOT / "templates", *ROOT.glob("*/templates")]


def page_templates() -> dict[str, Path]:
    """Template name -> file, for the project's own full pages.

    Admin overrides (templates/admin/...) extend the admin's pages, partials (``_name.html``) are
    included into a page, and base.html is the shell itself.
    """
    pages = {}
    for directory in template_dirs():
        for path in directory.rglob("*.html"):
            name = path.relative_to(directory).as_posix()
            if name.startswith("admin/") or path.name.startswith("_") or name == "base.html":
                continue
            pages[name] = path
    return pages


def test_every_page_extends_the_one_shell():
    assert settings.TEMPLATES[0]["DIRS"] == [ROOT / "templates"]
    assert get_template("base.html").origin.name == str(ROOT / "templates" / "base.html")
    pages = page_templates()
    assert {"approvals/queue.html", "approvals/detail.html", "approvals/leases.html", "approvals/login.html",
            "audit/session_list.html", "audit/session_detail.html"} <= set(pages)
    for name, path in pages.items():
        assert path.read_text().startswith('{% extends "base.html" %}'), name
        assert get_template(name).template.nodelist[0].parent_name.var == "base.html", name
    shells = [path for directory in template_dirs() for path in directory.rglob("base.html")]
    assert shells == [ROOT / "templates" / "base.html"]  # no app keeps a shell of its own


def test_one_front_end_package():
    tracked = subprocess.run(["git", "ls-files", "*package.json"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    # tests/idp is the tests' OIDC provider, not something a browser loads.
    assert [path for path in tracked if not path.startswith("tests/")] == ["frontend/package.json"]


def test_static_vendor_holds_exactly_the_pinned_packages():
    declared = json.loads((FRONTEND / "package.json").read_text())["dependencies"]
    locked = json.loads((FRONTEND / "package-lock.json").read_text())["packages"]
    assert locked[""]["dependencies"] == declared
    for name, version in declared.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), (name, version)  # pinned, never a range
        assert locked[f"node_modules/{name}"]["version"] == version, name
        assert (VENDOR / f"{name}-{version}" / "LICENSE").is_file(), name
    assert sorted(p.name for p in VENDOR.iterdir()) == sorted(f"{n}-{v}" for n, v in declared.items())
    # The pages load the vendored copies by versioned path: each one they name is a declared version.
    named = {found for directory in template_dirs() for path in directory.rglob("*.html")
             for found in re.findall(r"vendor/([^/'\"]+)/", path.read_text())}
    assert named and named <= {f"{n}-{v}" for n, v in declared.items()}
