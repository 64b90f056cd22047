"""Prepare the bench gateway's SQLite database: migrate, one Connection, allow-all rules.

Run as ``python -m bench.prepare`` in the gateway's environment (see
bench.procs.clean_env) with a JSON document on stdin:
``{"server_url": ..., "ca_file": ..., "token": ..., "group": ...}``.
The cluster token travels on stdin so it never shows in a process listing.
"""

import json
import sys
from pathlib import Path

CONNECTION = "kubesim"


def prepare(server_url: str, ca_file: str, token: str, group: str) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)

    from connections.models import Connection
    from policy.models import Rule

    connection = Connection(name=CONNECTION, server_url=server_url, ca_bundle=Path(ca_file).read_text())
    connection.bearer_token = token
    connection.full_clean()
    connection.save()
    Rule.objects.create(
        connection=connection, order=10, name="bench-all", effect="allow", groups=[group],
        verbs=["*"], api_groups=["*"], resources=["*", "*/*"], namespaces=["*"], names=["*"], mask_secrets=False,
    )
    Rule.objects.create(
        connection=connection, order=20, name="bench-non-resource", effect="allow", groups=[group],
        verbs=["*"], non_resource_urls=["*"],
    )


if __name__ == "__main__":
    spec = json.load(sys.stdin)
    prepare(spec["server_url"], spec["ca_file"], spec["token"], spec["group"])
