"""What deny and review rules see a request reach.

Deny and review rules match everything a request can reach (``Reach``), so a
forbidden action cannot be spelled another way; allow rules match the
request literally, so nothing is ever granted by these widenings:

* A collection request (no name) of ``list``, ``watch`` or
  ``deletecollection`` covers every name, and without a namespace every
  namespace (unless the resource is a built-in cluster-scoped one): "deny
  delete deployment web in shop" also refuses a deletecollection of shop's
  deployments and of all deployments, "deny get secrets in shop" also refuses
  ``kubectl get secrets -A``.  A collection of ``namespaces`` covers every
  namespace.
* Verbs imply the reads and deletes they perform: ``list`` returns what
  ``get`` would, ``watch`` what ``list`` would, and ``deletecollection``
  deletes and returns the objects (``delete``, ``list``, ``get``).
* Deleting a namespace deletes every object in it: it matches a deny or review
  rule whose verbs include ``delete`` or ``deletecollection`` for any resource
  in that namespace.
* API groups that serve the same objects are one: core ``events`` and
  ``events.k8s.io``; ``extensions`` and the groups its resources moved to.
"""

from __future__ import annotations

from dataclasses import dataclass

from kube.vocabulary import COLLECTION_VERBS, DELETE_VERBS

# What deny and review rules see a request do (see Reach).
IMPLIED_VERBS = {
    "list": ("get",),
    "watch": ("list", "get"),
    "deletecollection": ("delete", "list", "get"),
}
# Resources served under several API groups: the same objects, whichever path names them.
SAME_OBJECTS = {
    "events": frozenset({"", "events.k8s.io"}),
    "deployments": frozenset({"apps", "extensions"}),
    "daemonsets": frozenset({"apps", "extensions"}),
    "replicasets": frozenset({"apps", "extensions"}),
    "ingresses": frozenset({"networking.k8s.io", "extensions"}),
    "networkpolicies": frozenset({"networking.k8s.io", "extensions"}),
    "podsecuritypolicies": frozenset({"policy", "extensions"}),
}
# Built-in cluster-scoped resources (kube-apiserver discovery): without a namespace these
# are about cluster-scoped objects, not every namespace.  Anything else (custom resources
# included) is taken to be namespaced, which fails closed.  ``namespaces`` is left out on
# purpose: a collection of namespaces covers every namespace.
CLUSTER_SCOPED = frozenset({
    ("", "componentstatuses"), ("", "nodes"), ("", "persistentvolumes"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("apiextensions.k8s.io", "customresourcedefinitions"), ("apiregistration.k8s.io", "apiservices"),
    ("authentication.k8s.io", "selfsubjectreviews"), ("authentication.k8s.io", "tokenreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"), ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("certificates.k8s.io", "certificatesigningrequests"), ("certificates.k8s.io", "clustertrustbundles"),
    ("extensions", "podsecuritypolicies"), ("policy", "podsecuritypolicies"),
    ("flowcontrol.apiserver.k8s.io", "flowschemas"),
    ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations"),
    ("internal.apiserver.k8s.io", "storageversions"),
    ("networking.k8s.io", "ingressclasses"), ("networking.k8s.io", "ipaddresses"),
    ("networking.k8s.io", "servicecidrs"), ("node.k8s.io", "runtimeclasses"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"), ("rbac.authorization.k8s.io", "clusterroles"),
    ("resource.k8s.io", "deviceclasses"), ("resource.k8s.io", "resourceclasses"),
    ("resource.k8s.io", "resourceslices"), ("scheduling.k8s.io", "priorityclasses"),
    ("storage.k8s.io", "csidrivers"), ("storage.k8s.io", "csinodes"), ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "volumeattachments"), ("storage.k8s.io", "volumeattributesclasses"),
    ("storagemigration.k8s.io", "storageversionmigrations"),
})


def same_objects(info) -> frozenset[str]:
    """The API groups that serve the objects of ``info``'s group and resource."""
    groups = SAME_OBJECTS.get(info.resource, frozenset())
    return groups if info.api_group in groups else frozenset({info.api_group})


def rule_namespace(info) -> str:
    """The namespace rules match a resource request in: ``""`` for the Namespace objects themselves."""
    if info.api_group == "" and info.resource == "namespaces":
        return ""
    return info.namespace


@dataclass(frozen=True)
class Reach:
    """Everything a resource request can read or change, as deny and review rules see it."""

    info: object
    verbs: tuple[str, ...]
    api_groups: frozenset[str]
    any_name: bool
    any_namespace: bool
    namespace_contents: bool  # deletes one or every namespace, and so everything in it

    @classmethod
    def of(cls, info) -> Reach:
        collection = info.verb in COLLECTION_VERBS and not info.subresource
        cluster_scoped = (info.api_group, info.resource) in CLUSTER_SCOPED
        return cls(
            info=info,
            verbs=(info.verb, *IMPLIED_VERBS.get(info.verb, ())),
            api_groups=same_objects(info),
            any_name=collection and not info.name,
            any_namespace=collection and not info.namespace and not cluster_scoped,
            namespace_contents=(
                info.api_group == "" and info.resource == "namespaces" and not info.subresource
                and info.verb in DELETE_VERBS
            ),
        )
