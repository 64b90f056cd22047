"""The kubeconfig's exec plugin speaks client.authentication.k8s.io v1 and v1beta1, so every client gets in.

lightkube reads only v1alpha1 and v1beta1 exec entries and runs the plugin without
KUBERNETES_EXEC_INFO; kubectl and the official Python client send KUBERNETES_EXEC_INFO and
check that the answer has the version they asked for.  Each lists pods through the real gateway
with a token from the real test IdP.
"""

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from lightkube import Client, KubeConfig
from lightkube.resources.core_v1 import Pod

from tests.e2e_identity.agents import READER

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def plugin_cache(tmp_path, monkeypatch):
    """lightkube and the Python client run the plugin with this process's environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "plugin-cache"))


def test_lightkube_with_a_v1beta1_kubeconfig(agent_kubeconfig, plugin_cache):
    path = agent_kubeconfig(READER, "--exec-api-version", "v1beta1")
    lightkube = Client(config=KubeConfig.from_file(path))
    names = [pod.metadata.name for pod in lightkube.list(Pod, namespace="shop")]
    assert any(name.startswith("web-") for name in names)
    assert lightkube.get(Pod, names[0], namespace="shop").metadata.name == names[0]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_kubectl_and_the_python_client_with_either_version(agent_kubeconfig, kubectl, plugin_cache, version):
    path = agent_kubeconfig(READER, "--exec-api-version", version)
    assert "web-" in kubectl("get", "pods", "-n", "shop", kubeconfig=path).stdout
    api = k8s_client.CoreV1Api(k8s_config.new_client_from_config(config_file=str(path)))
    assert any(pod.metadata.name.startswith("web-") for pod in api.list_namespaced_pod("shop").items)
