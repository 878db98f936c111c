"""Merge a provider's `cluster.envoy` override (extproc.config.cluster_override) into its rendered
Envoy cluster: mappings merge key by key, lists and scalars replace, and a key that is one
member of a proto `oneof` removes the other members already rendered (so `explicit_http_config`
replaces the rendered `auto_config`). Pure; the rendered cluster is not mutated."""

from __future__ import annotations

import copy
import json
from typing import Any

from extproc.config.cluster_override import any_type, descriptors


def apply(cluster: dict[str, Any], override: str) -> dict[str, Any]:
    if not override:
        return cluster
    return _merge(copy.deepcopy(cluster), json.loads(override), descriptors())


def _merge(base: dict[str, Any], override: dict[str, Any], descriptor: Any, key_hint: str | None = None) -> dict[str, Any]:
    if descriptor is not None and descriptor.full_name == "google.protobuf.Any":
        descriptor = any_type({**base, **override}, key_hint)
    for key, value in override.items():
        field = descriptor.fields_by_name.get(key) if descriptor is not None else None
        if field is not None and field.containing_oneof is not None:
            for other in field.containing_oneof.fields:
                if other.name != key:
                    base.pop(other.name, None)
        old = base.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            message = field.message_type if field is not None else None
            if message is not None and message.GetOptions().map_entry:
                value_type = message.fields_by_name["value"].message_type
                for k, v in value.items():
                    if isinstance(old.get(k), dict) and isinstance(v, dict):
                        old[k] = _merge(old[k], v, value_type, key_hint=k)
                    else:
                        old[k] = v
            else:
                base[key] = _merge(old, value, message)
        else:
            base[key] = value
    return base
