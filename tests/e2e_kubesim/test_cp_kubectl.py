"""Real ``kubectl cp`` against kubesim, directly and through the gateway: tar through exec, both directions."""

import os

import pytest

pytestmark = pytest.mark.django_db(transaction=True)  # the gateway variant of ``route``

POD = """
apiVersion: v1
kind: Pod
metadata: {name: files, namespace: default}
spec:
  containers:
  - {name: app, image: busybox:1.37, command: ["sleep", "infinity"]}
"""


@pytest.fixture
def sandbox(route, kubesim, kubectl):
    kubectl("apply", "-f", "-", input=POD)
    return kubesim.sandbox_dir("default", "files")


def test_cp_local_file_to_pod(kubectl, sandbox, tmp_path):
    local = tmp_path / "upload.bin"
    local.write_bytes(os.urandom(300_000))
    kubectl("exec", "files", "--", "mkdir", "incoming")  # tar -C needs the directory, as in a real pod
    kubectl("cp", str(local), "default/files:incoming/upload.bin")
    assert (sandbox / "incoming" / "upload.bin").read_bytes() == local.read_bytes()


def test_cp_pod_file_to_local(kubectl, sandbox, tmp_path):
    content = os.urandom(300_000)
    (sandbox / "data").mkdir()
    (sandbox / "data" / "report.bin").write_bytes(content)
    target = tmp_path / "report.bin"
    kubectl("cp", "default/files:data/report.bin", str(target))
    assert target.read_bytes() == content


def test_cp_directory_round_trip(kubectl, sandbox, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.txt").write_text("beta\n")
    kubectl("cp", str(tree), "default/files:tree")
    assert (sandbox / "tree" / "sub" / "b.txt").read_text() == "beta\n"

    back = tmp_path / "back"
    kubectl("cp", "default/files:tree", str(back))
    assert (back / "a.txt").read_text() == "alpha\n"
    assert (back / "sub" / "b.txt").read_text() == "beta\n"

