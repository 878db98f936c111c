"""YAML file → validated `GatewayConfig`, reporting every problem at once with its path.

Paths use 0-based indexes: `models[3].price.input_per_mtok: must be >= 0`. Unknown keys are
errors, and so is a key repeated in one mapping (YAML loaders keep the last one silently), with its
line. Invalid YAML is reported with its line and column (1-based).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import yaml

from extproc.config.listener_tls import parse_listen
from extproc.config.model import (
    DEFAULT_POLICY,
    PRIORITIES,
    Admin,
    Admission,
    ExtProcSettings,
    GatewayConfig,
    Limits,
    Metrics,
    Model,
    Price,
    Provider,
    RateLimit,
    Tenant,
)
from extproc.config.providers import _provider
from extproc.config.reader import _join, _Reader
from extproc.config.routes import _policy, _route
from extproc.limits.model import ANY, Limit, Per, Unit
from extproc.translate.completions_fim import resolve_template

CAPABILITIES = ("tools", "images", "json", "reasoning", "embeddings", "fim")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SPIFFE = re.compile(r"^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$")  # trust domain, then a path


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every `path: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _listen(r: _Reader, raw: Any, path: str, default_port: int) -> tuple[str, int]:
    d = r.mapping(raw, path, ("address", "port")) or {}
    address = r.string(d, "address", path, default="127.0.0.1") or "127.0.0.1"
    port = r.number(d, "port", path, default_port, integer=True, minimum=1, maximum=65535)
    return address, port


def _model(r: _Reader, raw: Any, path: str, providers: dict[str, Provider]) -> Model | None:
    d = r.mapping(raw, path, ("name", "provider", "upstream_model", "price", "context_window",
                              "max_output_tokens", "capabilities", "quality", "max_concurrency", "fim_template"))
    if d is None:
        return None
    name = r.string(d, "name", path, required=True)
    provider = r.string(d, "provider", path, required=True)
    if provider and provider not in providers:
        r.fail(_join(path, "provider"), f"unknown provider {provider!r}")
    upstream = r.string(d, "upstream_model", path, default=name)
    price_path = _join(path, "price")
    pd = r.mapping(d.get("price"), price_path, ("input_per_mtok", "output_per_mtok")) or {}
    price = Price(r.number(pd, "input_per_mtok", price_path, 0.0, minimum=0),
                  r.number(pd, "output_per_mtok", price_path, 0.0, minimum=0))
    context_window = r.number(d, "context_window", path, 128000, integer=True, minimum=1)
    max_output = r.number(d, "max_output_tokens", path, 4096, integer=True, minimum=1)
    if isinstance(context_window, int) and isinstance(max_output, int) and max_output > context_window:
        r.fail(_join(path, "max_output_tokens"), "must be <= context_window")
    caps = []
    for i, cap in enumerate(r.seq(d, "capabilities", path)):
        if cap not in CAPABILITIES:
            r.fail(f"{path}.capabilities[{i}]", f"must be one of: {', '.join(CAPABILITIES)}")
        else:
            caps.append(cap)
    quality = r.number(d, "quality", path, 0.5, minimum=0, maximum=1)
    max_concurrency = r.number(d, "max_concurrency", path, 0, integer=True, minimum=0)
    fim_template = _fim_template(r, d, path, caps, providers.get(provider or ""))
    if not (name and provider and upstream) or provider not in providers:
        return None
    return Model(name, provider, upstream, price, context_window, max_output, frozenset(caps), float(quality),
                 max_concurrency, fim_template)


def _fim_template(r: _Reader, d: dict[str, Any], path: str, caps: list[str], provider: Provider | None) -> str | None:
    """The literal FIM template of a model (`extproc.translate.completions_fim`), or None."""
    raw = r.string(d, "fim_template", path)
    if raw is None:
        return None
    where = _join(path, "fim_template")
    if "fim" not in caps:
        r.fail(where, "needs the capability fim")
    if provider is not None and provider.type not in ("openai", "azure-openai"):
        r.fail(where, f"applies to openai and azure-openai providers (prompt-only completions), not {provider.type}")
    try:
        return resolve_template(raw)
    except ValueError as e:
        r.fail(where, str(e))
        return None


def _tenant(r: _Reader, raw: Any, path: str, model_names: set[str]) -> Tenant | None:
    d = r.mapping(raw, path, ("name", "api_key_sha256", "models", "priority", "priorities", "deadline", "limits",
                              "explain", "spiffe_ids"))
    if d is None:
        return None
    name = r.string(d, "name", path, required=True)
    hashes = []
    for i, h in enumerate(r.seq(d, "api_key_sha256", path, required="spiffe_ids" not in d)):
        if not isinstance(h, str) or not _HEX64.match(h):
            r.fail(f"{path}.api_key_sha256[{i}]", "must be a lowercase hex SHA-256 (64 characters)")
        else:
            hashes.append(h)
    spiffe_ids = []
    for i, s in enumerate(r.seq(d, "spiffe_ids", path)):
        if not isinstance(s, str) or not _SPIFFE.match(s):
            r.fail(f"{path}.spiffe_ids[{i}]", "must be a SPIFFE ID: spiffe://<trust domain>/<path>")
        else:
            spiffe_ids.append(s)
    patterns = []
    raw_models = d.get("models", ["*"])
    for i, m in enumerate(r.seq({"models": raw_models}, "models", path)):
        if not isinstance(m, str) or not m:
            r.fail(f"{path}.models[{i}]", "must be a non-empty string")
        elif not any(c in m for c in "*?[") and m not in model_names:
            r.fail(f"{path}.models[{i}]", f"unknown model {m!r}")
        else:
            patterns.append(m)
    priority = r.string(d, "priority", path, default="default", choices=PRIORITIES) or "default"
    priorities = _priorities(r, d, path, priority)
    deadline = r.duration(d, "deadline", path, 0.0)
    limits = [_limit(r, x, f"{path}.limits[{i}]", name or "", model_names)
              for i, x in enumerate(r.seq(d, "limits", path))]
    _unique(r, limits, lambda x: x.id, f"{path}.limits", "limit (same unit, per, model and priority)")
    if not name:
        return None
    return Tenant(name, tuple(hashes), tuple(patterns), priority, deadline, tuple(x for x in limits if x), priorities,
                  r.flag(d, "explain", path), tuple(spiffe_ids))


def _priorities(r: _Reader, d: dict[str, Any], path: str, priority: str) -> tuple[str, ...]:
    """A tenant's `priorities`: known class names, its own `priority` among them; () when absent."""
    if "priorities" not in d:
        return ()
    where = _join(path, "priorities")
    raw = d["priorities"]
    if not isinstance(raw, list) or not raw:
        r.fail(where, f"must be a non-empty list of priority classes ({', '.join(PRIORITIES)})")
        return ()
    out: list[str] = []
    for i, c in enumerate(raw):
        if c not in PRIORITIES:
            r.fail(f"{where}[{i}]", f"unknown priority class {str(c)[:40]!r} (expected one of {', '.join(PRIORITIES)})")
        elif c in out:
            r.fail(f"{where}[{i}]", f"duplicate priority class {c!r}")
        else:
            out.append(c)
    if len(out) == len(raw) and priority not in out:
        r.fail(where, f"must include the tenant's own priority {priority!r}")
    return tuple(out)


def _limit(r: _Reader, raw: Any, path: str, tenant: str, model_names: set[str]) -> Limit | None:
    """`{unit: tokens, amount: 100000, per: minute, model: gpt-4o, priority: batch, name: ...}`."""
    d = r.mapping(raw, path, ("unit", "amount", "per", "model", "priority", "name"))
    if d is None:
        return None
    unit = r.string(d, "unit", path, required=True, choices=tuple(u.value for u in Unit))
    per = r.string(d, "per", path, required=True, choices=tuple(x.value for x in Per))
    if "amount" not in d:
        r.fail(_join(path, "amount"), "required")
    amount: float | None = r.number(d, "amount", path, -1.0, minimum=0, maximum=1e12)
    if amount is not None and amount < 0:
        amount = None
    if unit != Unit.USD.value and amount is not None and not float(amount).is_integer():
        r.fail(_join(path, "amount"), f"must be a whole number of {unit}")
        amount = None
    model = r.string(d, "model", path, default=ANY) or ANY
    if model != ANY and model not in model_names:
        r.fail(_join(path, "model"), f"unknown model {model!r}")
    priority = r.string(d, "priority", path, default=ANY, choices=(*PRIORITIES, ANY)) or ANY
    label = r.string(d, "name", path, default="") or ""
    if unit is None or per is None or amount is None or not tenant:
        return None
    return Limit({"tenant": tenant, "model": model, "priority": priority}, Unit(unit), Per(per), float(amount), label)


def _unique(r: _Reader, items: list[Any], key: Callable[[Any], Any], path: str, what: str) -> None:
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        if item is None:
            continue
        k = key(item)
        if k in seen:
            r.fail(f"{path}[{i}]", f"duplicate {what} (same as {path}[{seen[k]}])")
        else:
            seen[k] = i


def validate(doc: Any) -> GatewayConfig:
    """Parsed YAML → GatewayConfig; raises ConfigError with every problem."""
    r = _Reader()
    top = r.mapping(doc, "", ("listen", "providers", "models", "tenants", "extproc", "limits", "admin",
                              "metrics", "routes", "default_policy", "rate_limit", "admission"))
    if top is None:
        raise ConfigError(r.problems or [": the config must be a mapping"])
    listen = parse_listen(r, top.get("listen"))

    providers = [_provider(r, p, f"providers[{i}]") for i, p in enumerate(r.seq(top, "providers", "", required=True))]
    _unique(r, providers, lambda p: p.name, "providers", "provider name")
    by_name = {p.name: p for p in providers if p}
    models = [_model(r, m, f"models[{i}]", by_name) for i, m in enumerate(r.seq(top, "models", "", required=True))]
    _unique(r, models, lambda m: (m.name, m.provider, m.upstream_model), "models", "deployment")
    names = {m.name for m in models if m}
    routes = [_route(r, x, f"routes[{i}]", names) for i, x in enumerate(r.seq(top, "routes", ""))]
    _unique(r, routes, lambda x: x.name, "routes", "route name")
    default_policy = (_policy(r, top["default_policy"], "default_policy") if "default_policy" in top
                      else DEFAULT_POLICY)
    names |= {x.name for x in routes if x}
    tenants = [_tenant(r, t, f"tenants[{i}]", names) for i, t in enumerate(r.seq(top, "tenants", "", required=True))]
    _unique(r, tenants, lambda t: t.name, "tenants", "tenant name")
    key_owner: dict[str, str] = {}
    for i, t in enumerate(tenants):
        if t is None:
            continue
        if t.spiffe_ids and (listen.tls is None or listen.tls.client_ca_file is None):
            r.fail(f"tenants[{i}].spiffe_ids", "needs listen.tls.client_ca_file (client certificates carry the ID)")
        for s in t.spiffe_ids:
            if s in key_owner and key_owner[s] != t.name:
                r.fail(f"tenants[{i}].spiffe_ids", f"{s} already belongs to tenant {key_owner[s]!r}")
            key_owner[s] = t.name
        for h in t.api_key_sha256:
            if h in key_owner and key_owner[h] != t.name:
                r.fail(f"tenants[{i}].api_key_sha256", f"key already belongs to tenant {key_owner[h]!r}")
            key_owner[h] = t.name

    xd = r.mapping(top.get("extproc"), "extproc", ("address", "port", "workers", "message_timeout",
                                                   "max_streams")) or {}
    xdef = ExtProcSettings()
    xaddr, xport = _listen(r, {k: xd[k] for k in ("address", "port") if k in xd}, "extproc", xdef.port)
    extproc = ExtProcSettings(
        xaddr, xport,
        workers=r.number(xd, "workers", "extproc", 0, integer=True, minimum=0, maximum=64),
        message_timeout=r.duration(xd, "message_timeout", "extproc", xdef.message_timeout, allow_zero=False),
        max_streams=r.number(xd, "max_streams", "extproc", xdef.max_streams, integer=True, minimum=1),
    )
    ld = r.mapping(top.get("limits"), "limits", ("max_request_bytes", "max_response_bytes")) or {}
    ldef = Limits()
    limits = Limits(r.number(ld, "max_request_bytes", "limits", ldef.max_request_bytes, integer=True, minimum=1024),
                    r.number(ld, "max_response_bytes", "limits", ldef.max_response_bytes, integer=True, minimum=1024))
    aaddr, aport = _listen(r, top.get("admin"), "admin", 9901)
    maddr, mport = _listen(r, top.get("metrics"), "metrics", 9464)
    rate_limit = _rate_limit(r, top.get("rate_limit"))
    admission = _admission(r, top.get("admission"), rate_limit.redis_url if rate_limit.store == "redis" else None)
    cfg = GatewayConfig(
        listen=listen,
        providers=tuple(p for p in providers if p),
        models=tuple(m for m in models if m),
        tenants=tuple(t for t in tenants if t),
        extproc=extproc, limits=limits, admin=Admin(aaddr, aport), metrics=Metrics(maddr, mport),
        routes=tuple(x for x in routes if x), default_policy=default_policy or DEFAULT_POLICY,
        rate_limit=rate_limit, admission=admission,
    )
    # With `workers: 0` (one per core) the worker count is known where the gateway runs:
    # `interlock run` and `interlock extproc` check again with it; here at least worker 0.
    for path, problem in cfg.port_clashes(extproc.workers or 1):
        r.fail(path, problem)
    if r.problems:
        raise ConfigError(r.problems)
    return cfg


def _rate_limit(r: _Reader, raw: Any) -> RateLimit:
    path = "rate_limit"
    base = RateLimit()
    d = r.mapping(raw, path, ("address", "port", "store", "redis_url", "failure_mode", "timeout",
                              "metrics_port")) or {}
    address, port = _listen(r, {k: d[k] for k in ("address", "port") if k in d}, path, base.port)
    store = r.string(d, "store", path, default=base.store, choices=("memory", "redis")) or base.store
    url = r.string(d, "redis_url", path, default=base.redis_url) or base.redis_url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        r.fail(_join(path, "redis_url"), "must be a redis://, rediss:// or unix:// URL")
    mode = r.string(d, "failure_mode", path, default=base.failure_mode, choices=("open", "closed"))
    timeout = r.duration(d, "timeout", path, base.timeout, allow_zero=False)
    metrics_port = r.number(d, "metrics_port", path, 0, integer=True, minimum=0, maximum=65535)
    return RateLimit(address, port, store, url, mode or base.failure_mode, timeout, metrics_port)


def _admission(r: _Reader, raw: Any, replicas_redis_url: str | None) -> Admission:
    path = "admission"
    base = Admission()
    d = r.mapping(raw, path, ("queue_timeout", "batch_share", "default_share", "success_rate_threshold",
                              "max_heap_bytes")) or {}
    batch = r.number(d, "batch_share", path, base.batch_share, minimum=0.05, maximum=1)
    default = r.number(d, "default_share", path, base.default_share, minimum=0.05, maximum=1)
    if batch > default:
        r.fail(_join(path, "batch_share"), "must be <= default_share (batch never gets more than default)")
    return Admission(
        queue_timeout=r.duration(d, "queue_timeout", path, base.queue_timeout),
        batch_share=float(batch), default_share=float(default),
        success_rate_threshold=float(r.number(d, "success_rate_threshold", path, base.success_rate_threshold,
                                              minimum=0, maximum=1)),
        max_heap_bytes=r.number(d, "max_heap_bytes", path, base.max_heap_bytes, integer=True,
                                minimum=64 * 1024 * 1024),
        replicas_redis_url=replicas_redis_url,
    )


def parse_yaml(text: str, source: str = "<config>") -> Any:
    """YAML text → plain data, as `yaml.safe_load` reads it, except that a key repeated in one
    mapping is an error (safe_load keeps the last silently: a second `models:` would widen a
    tenant). Raises ConfigError."""
    doc, duplicates = _parse(text, source)
    if duplicates:
        raise ConfigError(duplicates)
    return doc


def _parse(text: str, source: str) -> tuple[Any, list[str]]:
    """(the document, its duplicate keys as problems). Raises ConfigError for invalid YAML."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        duplicates = _duplicate_keys(loader, root)
        return (loader.construct_document(root) if root is not None else None), duplicates
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([f"{source}: invalid YAML at {where}: {e.problem or e.context}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{source}: invalid YAML: {e}"]) from None
    finally:
        loader.dispose()


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _duplicate_keys(loader: yaml.SafeLoader, root: yaml.Node | None) -> list[str]:
    """Every key met a second time in one mapping, in file order: `path: duplicate key at line L,
    column C (first at line F)` (lines and columns 1-based). Keys compare as YAML reads them (`1`
    and `0x1` are one key, `1` and `"1"` two). A merge key (`<<: *base`) is no duplicate: keys
    written beside it override the merged ones by design; an aliased node is checked once."""
    found: list[tuple[int, int, str]] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    children.append((value, path))
                    continue
                if not isinstance(key, yaml.ScalarNode):  # unhashable: constructing the document says so
                    continue
                name = loader.construct_object(key)
                child = _join(path, str(name))
                line, column = key.start_mark.line + 1, key.start_mark.column + 1
                if name in first:
                    found.append((line, column, f"{child}: duplicate key at line {line}, column {column} "
                                                f"(first at line {first[name]})"))
                else:
                    first[name] = line
                children.append((value, child))
        stack += reversed(children)  # depth first, in file order: an aliased node is named where it is defined
    return [problem for _, _, problem in sorted(found)]


def load_text(text: str, source: str = "<config>") -> GatewayConfig:
    """Every problem at once: duplicate keys first, then what `validate` finds in the document as
    YAML reads it (the last of the duplicates)."""
    doc, duplicates = _parse(text, source)
    try:
        cfg = validate(doc)
    except ConfigError as e:
        raise ConfigError(duplicates + e.problems) from None
    if duplicates:
        raise ConfigError(duplicates)
    return cfg


def load_file(path: str) -> GatewayConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    return load_text(text, path)
