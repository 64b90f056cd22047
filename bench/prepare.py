"""Prepare the bench gateway's database: migrate, one Connection, the production rules.

The rules are the production-guardrails preset (policy/presets.py) bound to the bench agent's
group, so every request is evaluated as in production (reads allowed with Secret values masked,
writes and interactive sessions held for review), plus one rule ahead of it: the bench agent may
exec into pods of the bench namespace without review, as a team would allow its own agent in its
own namespace (the exec measurement would otherwise wait for a reviewer).

Run as ``python -m bench.prepare`` in the gateway's environment (see
bench.procs.clean_env) with a JSON document on stdin:
``{"server_url": ..., "ca_file": ..., "token": ..., "group": ..., "namespace": ...}``, or
``"rules": "allow-all"`` instead of the namespace for one rule that forwards everything (the
killed-gateway test needs its writes forwarded, not held).  The cluster token travels on stdin so it
never shows in a process listing.
"""

import json
import sys
from pathlib import Path

CONNECTION = "kubesim"
PRESET = "production-guardrails"


def prepare(server_url: str, ca_file: str, token: str, group: str, namespace: str | None,
            allow_all: bool = False) -> list[str]:
    """The rules' names, in their first-match order."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)

    from connections.models import Connection
    from policy import presets, rulesets

    connection = Connection(name=CONNECTION, server_url=server_url, ca_bundle=Path(ca_file).read_text())
    connection.bearer_token = token
    connection.full_clean()
    connection.save()
    if allow_all:
        rulesets.apply_rules(connection, [{
            "name": "allow-all", "effect": "allow", "order": 10, "groups": [group], "subjects": [],
            "verbs": ["*"], "api_groups": ["*"], "resources": ["*", "*/*"], "namespaces": ["*"], "names": ["*"],
        }])
        return list(connection.rules.values_list("name", flat=True))
    # Rules are first-match in order; the preset's first rules are its dry runs (5) and its held sessions (10).
    rulesets.apply_rules(connection, [{
        "name": "bench-exec", "effect": "allow", "order": 1, "groups": [group], "subjects": [],
        "description": "The bench agent execs into pods of its own namespace without review.",
        "verbs": ["*"], "api_groups": [""], "resources": ["pods/exec"], "namespaces": [namespace], "names": ["*"],
    }])
    presets.apply_preset(connection, PRESET, groups=[group])
    return list(connection.rules.order_by("order", "name").values_list("name", flat=True))


if __name__ == "__main__":
    spec = json.load(sys.stdin)
    names = prepare(spec["server_url"], spec["ca_file"], spec["token"], spec["group"], spec.get("namespace"),
                    allow_all=spec.get("rules") == "allow-all")
    json.dump(names, sys.stdout)
