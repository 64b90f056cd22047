"""Load multi-document YAML manifests into the cluster at start-up (namespaces first)."""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ApiError
from .store import Cluster

DEFAULT_SEED = Path(__file__).with_name("seed.yaml")
# libyaml's parser when PyYAML has it (it does in the wheels): the same safe loading, and the default
# seed parses in a few milliseconds instead of ~0.1 s, at every kubesim start.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FIRST = ("Namespace", "Node", "ServiceAccount")


class SeedError(Exception):
    pass


def documents(path: Path) -> list[dict]:
    try:
        docs = list(yaml.load_all(path.read_text(), Loader=_LOADER))
    except (OSError, yaml.YAMLError) as exc:
        raise SeedError(f"{path}: {exc}") from None
    out: list[dict] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SeedError(f"{path}: every document must be a mapping")
        if doc.get("kind") == "List":
            out.extend(doc.get("items") or [])
        else:
            out.append(doc)
    return out


def load_seed_files(cluster: Cluster, paths: list[Path]) -> int:
    """Create every object of every file; the controllers then add pods, events and defaults."""
    objs = [(path, doc) for path in paths for doc in documents(path)]
    objs.sort(key=lambda item: _FIRST.index(item[1].get("kind")) if item[1].get("kind") in _FIRST else len(_FIRST))
    for path, obj in objs:
        res = cluster.discovery.by_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        meta = obj.get("metadata") or {}
        what = f"{obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name', '')}"
        if res is None:
            raise SeedError(f"{path}: {what}: no such resource in discovery")
        ns = meta.get("namespace", "default") if res.namespaced else ""
        existing = cluster.find(res.group, res.name, ns, meta.get("name", ""))
        try:
            if existing is not None:
                cluster.update(res, ns, meta["name"], {**obj, "metadata": {**meta, "namespace": ns}}
                               if res.namespaced else obj, check_rv=False)
                if "status" in obj and "status" in res.subresources:
                    cluster.set_status(res, cluster.find(res.group, res.name, ns, meta["name"]), obj["status"])
            else:
                cluster.create(res, ns, obj)
        except ApiError as exc:
            raise SeedError(f"{path}: {what}: {exc.message}") from None
    return len(objs)
