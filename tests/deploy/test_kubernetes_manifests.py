"""deploy/kubernetes/: what kubectl renders is valid Kubernetes 1.37, accepted by an API server, and safe.

Rendered with the real kubectl (kustomize inside it), validated against Kubernetes 1.37's own
schemas (kubernetes-validate, strict: unknown fields are errors), applied with
``--dry-run=server`` to kubesim (which decodes strictly, as kube-apiserver does with
``fieldValidation=Strict``), then checked for the security settings the deployment promises.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
KUBERNETES_VERSION = "1.37"
OVERLAYS = ["quickstart", "production"]
# Every overlay, and production with impersonation mode's RBAC added.
VARIANTS = [*OVERLAYS, "production+impersonation"]
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob", "ReplicaSet", "Pod"}
# Secrets the manifests reference and the operator creates (README "Deploy to Kubernetes").
REFERENCED_SECRETS = {"airlock-secrets", "airlock-gateway-tls", "airlock-extra-env", "airlock-postgres",
                      "airlock-database", "airlock-redis"}
SECRET_SETTINGS = {"AIRLOCK_SECRET_KEY", "AIRLOCK_FIELD_ENCRYPTION_KEYS", "AIRLOCK_AUDIT_KEYS", "DATABASE_URL",
                   "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "AIRLOCK_NOTIFY_WEBHOOKS",
                   "AIRLOCK_DASHBOARD_OIDC_CLIENT_SECRET", "AIRLOCK_DEV_STATIC_TOKENS", "POSTGRES_PASSWORD"}


def run_kubectl(*args: str, input: str | None = None, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    result = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, timeout=60, env=env,
                            cwd=cwd)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


@functools.cache
def render_text(variant: str) -> str:
    if variant == "production+impersonation":
        # An overlay of the operator's own: production plus the impersonation component.
        with tempfile.TemporaryDirectory() as tmp:
            relative = os.path.relpath(KUSTOMIZE, tmp)
            (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": [f"{relative}/overlays/production"],
                "components": [f"{relative}/components/impersonation"],
            }))
            return run_kubectl("kustomize", tmp)
    return run_kubectl("kustomize", str(KUSTOMIZE / "overlays" / variant))


def render(variant: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render_text(variant)) if doc]


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def config(objects: list[dict]) -> dict:
    (configmap,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("airlock-config")]
    return configmap["data"]


# --- valid Kubernetes ------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_validates_against_the_1_37_schemas(variant):
    # kubernetes-validate falls back to older schemas for a version it lacks: it has 1.37's.
    assert kubernetes_validate.latest_version().startswith(KUBERNETES_VERSION + ".")
    objects = render(variant)
    assert len(objects) >= 15
    for obj in objects:
        try:
            validated = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}") from None
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise AssertionError(exc.message) from None
        assert validated == KUBERNETES_VERSION


@pytest.mark.parametrize("variant", VARIANTS)
def test_kubesim_accepts_the_render_with_a_server_side_dry_run(kubesim, kubectl, variant):
    text = render_text(variant)
    kubectl("create", "namespace", "airlock")  # a dry run creates nothing: namespaced objects need it
    result = kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text)
    objects = render(variant)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(objects)
    assert all(line.endswith("(server dry run)") for line in lines), result.stdout
    # Nothing was stored: a dry run.
    assert kubectl("get", "all,configmaps,networkpolicies,serviceaccounts", "-n", "airlock", "-l",
                   "app.kubernetes.io/part-of=airlock", "-o", "name").stdout == ""


@pytest.mark.parametrize("variant", OVERLAYS)
def test_selectors_match_their_pods(variant):
    """What kube-apiserver's validation refuses and kubesim does not check: a selector missing its pods."""
    objects = render(variant)
    pods = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
            for o in objects if o["kind"] in {"Deployment", "StatefulSet"}}
    for name, labels in pods.items():
        workload = next(o for o in objects if o["metadata"]["name"] == name and o["kind"] in {"Deployment", "StatefulSet"})
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    for service in of_kind(objects, "Service"):
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in pods.values()), service["metadata"]["name"]
    pdb = named(objects, "PodDisruptionBudget", "airlock-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pods["airlock-gateway"].items()


# --- security settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", OVERLAYS)
def test_every_pod_runs_unprivileged_on_a_read_only_root(variant):
    workloads = [o for o in render(variant) if o["kind"] in WORKLOADS]
    assert {w["metadata"]["name"] for w in workloads} >= {"airlock-gateway", "airlock-worker", "airlock-beat",
                                                          "airlock-migrate"}
    for workload in workloads:
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod.get("runAsUser", 1) != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), name
        assert all("hostPath" not in volume for volume in spec.get("volumes", [])), name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"]["drop"] == ["ALL"] and not context["capabilities"].get("add"), where
            assert context.get("runAsNonRoot", True) is True and context.get("runAsUser", 1) != 0, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys() and "memory" in resources["limits"], where
            assert not container["image"].endswith(":latest") or variant == "quickstart", where
        # Only the gateway holds a ServiceAccount token (for an in-cluster connection).
        if name == "airlock-gateway":
            assert spec["serviceAccountName"] == "airlock-gateway" and spec["automountServiceAccountToken"] is True
        else:
            assert spec["automountServiceAccountToken"] is False, name


@pytest.mark.parametrize("variant", OVERLAYS)
def test_writable_places_are_emptydirs_for_tmp_and_the_audit_journal(variant):
    objects = render(variant)
    settings = config(objects)
    for name in ("airlock-gateway", "airlock-worker", "airlock-beat", "airlock-migrate"):
        workload = next(o for o in objects if o["metadata"]["name"] == name and o["kind"] in WORKLOADS)
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name
    gateway = pod_spec(named(objects, "Deployment", "airlock-gateway"))
    volumes = {v["name"]: v for v in gateway["volumes"]}
    mounts = {m["mountPath"]: m for m in gateway["containers"][0]["volumeMounts"]}
    journal = settings["AIRLOCK_AUDIT_JOURNAL_DIR"]
    assert "emptyDir" in volumes[mounts[journal]["name"]] and not mounts[journal].get("readOnly")
    anchors = os.path.dirname(settings["AIRLOCK_AUDIT_ANCHOR_FILE"])
    assert "emptyDir" in volumes[mounts[anchors]["name"]]
    # The TLS key is mounted read-only from a Secret the operator creates.
    tls = next(m for m in mounts.values() if volumes[m["name"]].get("secret"))
    assert tls["readOnly"] is True and volumes[tls["name"]]["secret"]["secretName"] == "airlock-gateway-tls"


@pytest.mark.parametrize("variant", OVERLAYS)
def test_gateway_probes_ports_and_graceful_termination(variant):
    objects = render(variant)
    spec = pod_spec(named(objects, "Deployment", "airlock-gateway"))
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 8443, "metrics": 9090}
    for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"], get["scheme"]) == (path, "https", "HTTPS"), probe
    command = container["command"]
    assert command[:2] == ["uvicorn", "airlock.asgi:application"] and "--port=8443" in command
    assert "--http=airlock.server:HttpToolsProtocol" in command
    assert "--no-proxy-headers" in command  # the audit trail records the peer, never X-Forwarded-For
    assert "--no-server-header" in command  # agents see kube-apiserver's fields, no "server: uvicorn"
    tls_files = [arg.split("=", 1)[1] for arg in command if arg.startswith(("--ssl-certfile=", "--ssl-keyfile="))]
    assert len(tls_files) == 2 and all(path.startswith("/etc/airlock/tls/") for path in tls_files)
    # SIGTERM: preStop, the stream drain, uvicorn's graceful shutdown, the audit flush; all before SIGKILL.
    drain = float(config(objects)["AIRLOCK_DRAIN_SECONDS"])
    graceful = float(next(arg for arg in command if arg.startswith("--timeout-graceful-shutdown=")).split("=")[1])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain + graceful + drain
    metrics = named(objects, "Service", "airlock-gateway-metrics")
    assert [p["port"] for p in metrics["spec"]["ports"]] == [9090]


@pytest.mark.parametrize("variant,replicas", [("quickstart", 1), ("production", 3)])
def test_gateway_replicas_spread_and_disruption_budget(variant, replicas):
    objects = render(variant)
    gateway = named(objects, "Deployment", "airlock-gateway")
    assert gateway["spec"]["replicas"] == replicas
    assert gateway["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    keys = {c["topologyKey"] for c in pod_spec(gateway)["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    pdb = named(objects, "PodDisruptionBudget", "airlock-gateway")
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("variant", OVERLAYS)
def test_exactly_one_beat(variant):
    objects = render(variant)
    beats = [o for o in objects if o["kind"] in WORKLOADS
             and "beat" in pod_spec(o)["containers"][0].get("command", [])]
    assert [b["metadata"]["name"] for b in beats] == ["airlock-beat"]
    (beat,) = beats
    assert beat["kind"] == "Deployment" and beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}  # never two during a rollout
    assert not [o for o in of_kind(objects, "HorizontalPodAutoscaler")
                if o["spec"]["scaleTargetRef"]["name"] == "airlock-beat"]
    # The gateways leave the sweep to beat.
    assert config(objects)["AIRLOCK_APPROVALS_SWEEP_IN_GATEWAY"] == "false"


def test_migrations_run_as_a_job():
    for variant in OVERLAYS:
        job = named(render(variant), "Job", "airlock-migrate")
        assert pod_spec(job)["containers"][0]["command"] == ["python", "manage.py", "migrate", "--noinput"]
        assert pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_are_referenced_never_rendered(variant):
    objects = render(variant)
    assert of_kind(objects, "Secret") == []
    for configmap in of_kind(objects, "ConfigMap"):
        assert not set(configmap.get("data", {})) & SECRET_SETTINGS, configmap["metadata"]["name"]
        for key, value in configmap.get("data", {}).items():
            assert "://" not in value or "@" not in value, f"{key} carries credentials in a URL"
    referenced = set()
    for workload in (o for o in objects if o["kind"] in WORKLOADS):
        spec = pod_spec(workload)
        for container in spec["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.add(ref["name"])
                if entry["name"] in SECRET_SETTINGS and "value" in entry:
                    # Only the quick start's URLs of bundled services, whose password is a reference.
                    assert "$(POSTGRES_PASSWORD)" in entry["value"] or "@" not in entry["value"], entry["name"]
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    referenced.add(source["secretRef"]["name"])
        referenced |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    assert referenced <= REFERENCED_SECRETS
    assert {"airlock-secrets", "airlock-gateway-tls"} <= referenced


@pytest.mark.parametrize("variant,database", [("quickstart", "airlock-postgres"), ("production", "airlock-database")])
def test_every_django_process_gets_the_production_settings(variant, database):
    """Each setting that production refuses to start without reaches the gateway, worker, beat and migrate."""
    objects = render(variant)
    settings = config(objects)
    assert settings["AIRLOCK_ENV"] == "production"
    for name in ("airlock-gateway", "airlock-worker", "airlock-beat", "airlock-migrate"):
        workload = next(o for o in objects if o["metadata"]["name"] == name and o["kind"] in WORKLOADS)
        container = pod_spec(workload)["containers"][0]
        env = {entry["name"] for entry in container["env"]}
        assert any(s.get("configMapRef", {}).get("name", "").startswith("airlock-config") for s in container["envFrom"])
        names = env | set(settings)
        assert {"AIRLOCK_SECRET_KEY", "AIRLOCK_FIELD_ENCRYPTION_KEYS", "AIRLOCK_AUDIT_KEYS", "DATABASE_URL", "REDIS_URL",
                "AIRLOCK_AUDIT_ANCHOR_FILE", "AIRLOCK_AUDIT_JOURNAL_DIR", "AIRLOCK_ALLOWED_HOSTS"} <= names, name
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
        assert database in refs, name


@pytest.mark.parametrize("variant", OVERLAYS)
def test_every_setting_named_is_one_airlock_reads(variant):
    """A misspelt variable would be ignored silently: every name is one the code reads (docs/configuration.md)."""
    from tests.deploy.settings_reader import read_by_code

    known = set(read_by_code()) | {"POSTGRES_PASSWORD"}
    objects = render(variant)
    names = set(config(objects))
    for name in ("airlock-gateway", "airlock-worker", "airlock-beat", "airlock-migrate"):
        workload = next(o for o in objects if o["metadata"]["name"] == name and o["kind"] in WORKLOADS)
        names |= {entry["name"] for entry in pod_spec(workload)["containers"][0]["env"]}
    assert sorted(names - known) == []


@pytest.mark.parametrize("variant", OVERLAYS)
def test_network_is_denied_unless_allowed(variant):
    objects = render(variant)
    policies = of_kind(objects, "NetworkPolicy")
    deny = named(objects, "NetworkPolicy", "airlock-default-deny")
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    ingress_ports = {port["port"] for policy in policies if policy["spec"]["podSelector"].get("matchLabels", {})
                     .get("app.kubernetes.io/component") == "gateway"
                     for rule in policy["spec"].get("ingress", []) for port in rule["ports"]}
    assert ingress_ports == {8443, 9090}
    metrics_rule = next(rule for policy in policies for rule in policy["spec"].get("ingress", [])
                        if any(port["port"] == 9090 for port in rule["ports"]))
    assert metrics_rule.get("from"), "metrics are not open to everyone"
    if variant == "quickstart":
        for component, port in (("postgres", 5432), ("redis", 6379)):
            (policy,) = [p for p in policies
                         if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == component]
            (rule,) = policy["spec"]["ingress"]
            assert rule["from"] == [{"podSelector": {"matchLabels": {"airlock.dev/settings": "django"}}}]
            assert [p["port"] for p in rule["ports"]] == [port]


# --- RBAC ------------------------------------------------------------------------------------------

def rules_of(objects: list[dict], subject: str) -> list[dict]:
    """Every rule bound to the ServiceAccount ``subject`` (ClusterRoles in the render or built in)."""
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] in {"ClusterRole", "Role"}}
    rules = []
    for binding in (o for o in objects if o["kind"] in {"ClusterRoleBinding", "RoleBinding"}):
        if any(s["kind"] == "ServiceAccount" and s["name"] == subject and s["namespace"] == "airlock"
               for s in binding["subjects"]):
            role = binding["roleRef"]["name"]
            assert role != "cluster-admin" and role != "admin" and role != "edit", role
            if role in roles:
                rules.extend(roles[role]["rules"])
            else:
                assert role == "view", f"{binding['metadata']['name']}: only the built-in read-only role"
    return rules


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_gateway_account_has_the_least_rbac(variant):
    objects = render(variant)
    for role in (o for o in objects if o["kind"] in {"ClusterRole", "Role"}):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert not {"escalate", "bind"} & set(rule["verbs"])
    rules = rules_of(objects, "airlock-gateway")
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]} in rules
    impersonation = [rule for rule in rules if "impersonate" in rule["verbs"]]
    if variant == "production+impersonation":
        assert {tuple(rule["resources"]) for rule in impersonation} == {("users",), ("groups",)}
        for rule in impersonation:
            assert rule["verbs"] == ["impersonate"] and rule["apiGroups"] == [""]
            # Scoped to names: never everyone, never a system: user or group, never a ServiceAccount.
            assert rule["resourceNames"], rule
            assert not [n for n in rule["resourceNames"] if n.startswith("system:") or n == "*"]
    else:
        assert impersonation == []
    assert len(rules) == len(impersonation) + 1
    assert rules_of(objects, "airlock-jobs") == []
