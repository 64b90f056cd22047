"""Discovery documents and the resource registry derived from them.

The real kube-apiserver documents in kubesim/api/ are the single source of truth for which
resources exist, their kind, scope, verbs and subresources. Every response body is encoded once
at start-up so a discovery GET costs a dict lookup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

API_DIR = Path(__file__).with_name("api")
AGGREGATED_MEDIA_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    group: str
    version: str
    verbs: frozenset[str]


@dataclass(frozen=True)
class Resource:
    """One resource of one group-version, as listed by discovery."""

    group: str
    version: str
    name: str
    singular: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: dict[str, Subresource] = field(default_factory=dict, compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def _load(name: str) -> dict:
    return json.loads((API_DIR / name).read_text())


def _dump(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _resource_list_entry(r: dict) -> dict:
    """APIResourceList entry from an aggregated-discovery resource (or subresource) entry."""
    kind = r["responseKind"]
    entry: dict = {"kind": kind["kind"]}
    if kind.get("group") or kind.get("version"):
        entry["group"] = kind.get("group", "")
        entry["version"] = kind.get("version", "")
    return entry


class Discovery:
    """Registry of served resources plus the pre-encoded discovery responses."""

    def __init__(self, server_address: str = "127.0.0.1:6443") -> None:
        self.resources: dict[tuple[str, str, str], Resource] = {}
        self.legacy: dict[str, bytes] = {}
        self.aggregated: dict[str, bytes] = {}
        self.group_versions: list[tuple[str, str]] = []
        self.preferred: dict[str, str] = {}
        self._by_kind: dict[tuple[str, str, str], Resource] = {}

        api = _load("api.json")
        api["serverAddressByClientCIDRs"] = [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
        self.legacy["/api"] = _dump(api)
        core = _load("api__v1.json")
        self.legacy["/api/v1"] = (API_DIR / "api__v1.json").read_bytes()
        self._register_resource_list("", "v1", core)
        self.group_versions.append(("", "v1"))
        self.preferred[""] = "v1"

        apis = _load("apis.json")
        self.legacy["/apis"] = (API_DIR / "apis.json").read_bytes()
        aggregated = _load("aggregated_v2.json")
        self.aggregated["/apis"] = (API_DIR / "aggregated_v2.json").read_bytes()
        agg_index = {
            (g["metadata"]["name"], v["version"]): v
            for g in aggregated["items"]
            for v in g["versions"]
        }
        for group in apis["groups"]:
            name = group["name"]
            self.preferred[name] = group["preferredVersion"]["version"]
            self.legacy[f"/apis/{name}"] = _dump({"kind": "APIGroup", "apiVersion": "v1", **group})
            for gv in group["versions"]:
                version = gv["version"]
                self.group_versions.append((name, version))
                file = API_DIR / f"apis__{name}__{version}.json"
                if file.exists():
                    doc = json.loads(file.read_text())
                    self.legacy[f"/apis/{name}/{version}"] = file.read_bytes()
                else:
                    doc = self._derive_resource_list(name, version, agg_index.get((name, version)))
                    self.legacy[f"/apis/{name}/{version}"] = _dump(doc)
                self._register_resource_list(name, version, doc)

        self.aggregated["/api"] = _dump(self._derive_core_aggregated(core))

    # -- construction helpers -------------------------------------------------------------

    @staticmethod
    def _derive_resource_list(group: str, version: str, agg_version: dict | None) -> dict:
        """APIResourceList for a group-version that has no file, from aggregated_v2.json.

        A group-version listed in apis.json but absent from aggregated_v2.json (storage.k8s.io/
        v1beta1) gets an empty list: there is no source to say what it serves.
        """
        resources: list[dict] = []
        for r in (agg_version or {}).get("resources", []):
            namespaced = r["scope"] == "Namespaced"
            entry = {
                "name": r["resource"],
                "singularName": r.get("singularResource", ""),
                "namespaced": namespaced,
                **_resource_list_entry(r),
                "verbs": r.get("verbs", []),
            }
            if r.get("shortNames"):
                entry["shortNames"] = r["shortNames"]
            if r.get("categories"):
                entry["categories"] = r["categories"]
            resources.append(entry)
            for sub in r.get("subresources", []):
                resources.append(
                    {
                        "name": f"{r['resource']}/{sub['subresource']}",
                        "singularName": "",
                        "namespaced": namespaced,
                        **_resource_list_entry(sub),
                        "verbs": sub.get("verbs", []),
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}",
            "resources": resources,
        }

    @staticmethod
    def _derive_core_aggregated(core: dict) -> dict:
        """Aggregated discovery for /api, built from the legacy core v1 APIResourceList."""
        top: dict[str, dict] = {}
        order: list[str] = []
        for r in core["resources"]:
            name = r["name"]
            if "/" in name:
                continue
            entry = {
                "resource": name,
                "responseKind": {"group": "", "kind": r["kind"], "version": ""},
                "scope": "Namespaced" if r["namespaced"] else "Cluster",
                "singularResource": r.get("singularName", ""),
                "verbs": r["verbs"],
            }
            if r.get("shortNames"):
                entry["shortNames"] = r["shortNames"]
            if r.get("categories"):
                entry["categories"] = r["categories"]
            top[name] = entry
            order.append(name)
        for r in core["resources"]:
            if "/" not in r["name"]:
                continue
            parent, sub = r["name"].split("/", 1)
            if parent not in top:
                continue
            top[parent].setdefault("subresources", []).append(
                {
                    "responseKind": {
                        "group": r.get("group", ""),
                        "kind": r["kind"],
                        "version": r.get("version", ""),
                    },
                    "subresource": sub,
                    "verbs": r["verbs"],
                }
            )
        return {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": [
                {
                    "metadata": {"creationTimestamp": None},
                    "versions": [
                        {
                            "version": "v1",
                            "resources": [top[n] for n in order],
                            "freshness": "Current",
                        }
                    ],
                }
            ],
        }

    def _register_resource_list(self, group: str, version: str, doc: dict) -> None:
        pending_subs: list[dict] = []
        for r in doc.get("resources", []):
            if "/" in r["name"]:
                pending_subs.append(r)
                continue
            res = Resource(
                group=group,
                version=version,
                name=r["name"],
                singular=r.get("singularName") or r["kind"].lower(),
                kind=r["kind"],
                namespaced=bool(r["namespaced"]),
                verbs=frozenset(r.get("verbs", [])),
                short_names=tuple(r.get("shortNames", [])),
                categories=tuple(r.get("categories", [])),
            )
            self.resources[(group, version, res.name)] = res
            self._by_kind.setdefault((group, version, res.kind), res)
        for r in pending_subs:
            parent, sub = r["name"].split("/", 1)
            res = self.resources.get((group, version, parent))
            if res is None:
                continue
            res.subresources[sub] = Subresource(
                name=sub,
                kind=r["kind"],
                group=r.get("group", group),
                version=r.get("version", version),
                verbs=frozenset(r.get("verbs", [])),
            )

    # -- queries ----------------------------------------------------------------------------

    def lookup(self, group: str, version: str, resource: str) -> Resource | None:
        return self.resources.get((group, version, resource))

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        group, _, version = api_version.rpartition("/")
        return self._by_kind.get((group, version, kind))

    def storage_resource(self, group: str, resource: str) -> Resource | None:
        """The resource at the group's preferred version (used for seeding and cascades)."""
        version = self.preferred.get(group)
        found = self.resources.get((group, version, resource)) if version else None
        if found:
            return found
        for (g, _, name), res in self.resources.items():
            if g == group and name == resource:
                return res
        return None
