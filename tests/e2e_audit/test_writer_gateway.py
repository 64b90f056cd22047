"""The gateway with the audit writer process (AIRLOCK_AUDIT_WRITER=process, production's default): a write
is forwarded only once the writer says its event is committed; without a writer it is refused and never
reaches the cluster; reads, writes and an exec session are recorded through the writer."""

import pytest

from audit.tests.test_writer import WriterProcess, journal_dir, no_writer_left_behind  # noqa: F401  (fixtures)
from tests.gateway_harness import allow_everything_for, make_gateway_app, serving

pytestmark = pytest.mark.django_db(transaction=True)


def test_writes_wait_for_the_writer_process_and_are_refused_without_it(cluster_connection, kubectl, journal_dir,
                                                                       tmp_path):
    from audit import chain
    from audit.models import AuditEvent
    from audit.recorder import Recorder

    allow_everything_for(cluster_connection)
    recorder = Recorder(writer="process", journal_dir=journal_dir, spawn_writer=False, sync_interval=0.05,
                        commit_wait=1.0)
    writer = None
    with serving(make_gateway_app(recorder=recorder), cluster_connection, tmp_path / "gateway") as gateway:
        agent = gateway.kubeconfig()
        refused = kubectl("create", "configmap", "unrecorded", "-n", "shop", "--from-literal=a=b", kubeconfig=agent,
                          check=False)
        assert refused.returncode != 0 and "audit" in refused.stderr
        assert kubectl("get", "configmap", "unrecorded", "-n", "shop", check=False).returncode != 0  # never forwarded

        writer = WriterProcess(journal_dir)
        kubectl("create", "configmap", "recorded", "-n", "shop", "--from-literal=a=b", kubeconfig=agent)
        kubectl("get", "configmaps", "-n", "shop", kubeconfig=agent)
        kubectl("apply", "-f", "-", kubeconfig=agent, input=(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: rec, namespace: default}\n"
            "spec:\n  containers:\n  - {name: main, image: busybox}\n"))
        result = kubectl("exec", "-i", "rec", "--", "sh", "-c", "cat; exit 3", kubeconfig=agent,
                         input="typed-through-the-writer\n", check=False)
        assert result.returncode == 3
    # serving() checked one completion per request the gateway handled, all committed by the writer.
    code, output = writer.stop()
    assert code == 0, output

    creates = {}
    for audit_id, stage, code in (AuditEvent.objects.filter(verb="create", object_resource="configmaps")
                                  .order_by("seq").values_list("audit_id", "stage", "response_code")):
        creates.setdefault(audit_id, []).append((stage, code))
    # The refused one (its event journaled, committed once a writer came) and the recorded one, in that order.
    assert list(creates.values()) == [[("RequestReceived", None), ("ResponseComplete", 503)],
                                      [("RequestReceived", None), ("ResponseComplete", 201)]]
    session = AuditEvent.objects.get(stage="ResponseComplete", object_subresource="exec", object_name="rec")
    assert session.recording.exit_code == 3 and "typed-through-the-writer" in session.recording.asciicast
    assert chain.verify_chain().ok
