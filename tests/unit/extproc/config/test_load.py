"""`interlock check`: every invalid fixture yields exactly its expected problems and exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.cmd.cli import main
from extproc.config import ConfigError, load_file, load_text, parse_duration
from extproc.config.load import parse_yaml
from tests.conftest import FIXTURES

INVALID = sorted((FIXTURES / "config" / "invalid").glob("*.yaml"))
VALID = sorted((FIXTURES / "config" / "valid").glob("*.yaml"))


def _expectations(path: Path) -> tuple[list[str], list[str]]:
    exact, substrings = [], []
    for line in path.read_text().splitlines():
        if line.startswith("# expect: "):
            exact.append(line.removeprefix("# expect: "))
        elif line.startswith("# expect-substring: "):
            substrings.append(line.removeprefix("# expect-substring: "))
    return exact, substrings


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_config_reports_every_problem(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exact, substrings = _expectations(path)
    assert exact or substrings, f"{path.name} has no '# expect:' lines"
    assert main(["check", "-c", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    if exact:
        assert sorted(lines) == sorted(exact)
    for s in substrings:
        assert any(s in line for line in lines), (s, lines)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_config_prints_summary(path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "INTERLOCK_SIM_API_KEY"):
        monkeypatch.setenv(var, "k")
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "OK" in out[0] and "providers" in out[0]


def test_missing_credentials_warn_but_pass(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["check", "-c", str(FIXTURES / "config" / "valid" / "minimal.yaml")]) == 0
    assert "warning: providers[0] (openai): environment variable OPENAI_API_KEY gives no key here" in capsys.readouterr().err


def test_missing_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_file(str(tmp_path / "nope.yaml"))
    assert len(e.value.problems) == 1 and "cannot read" in e.value.problems[0]


def test_defaults_and_typed_values() -> None:
    cfg = load_file(str(FIXTURES / "config" / "valid" / "full.yaml"))
    anthropic = cfg.provider("anthropic")
    assert anthropic.cluster.connect_timeout == 2.0
    assert anthropic.cluster.idle_timeout == 600.0
    assert anthropic.endpoint.tls and anthropic.endpoint.port == 443
    vllm = cfg.provider("vllm")
    assert (vllm.endpoint.host, vllm.endpoint.port, vllm.endpoint.base_path) == ("10.0.0.12", 8000, "/serving")
    team_a = next(t for t in cfg.tenants if t.name == "team-a")
    assert team_a.allows("claude-haiku-4-5") and not team_a.allows("llama")
    minimal = load_text((FIXTURES / "config" / "valid" / "minimal.yaml").read_text())
    assert (minimal.listen.address, minimal.listen.port) == ("127.0.0.1", 10000)
    assert minimal.provider("openai").endpoint.host == "api.openai.com"
    assert minimal.models[0].upstream_model == "gpt-4o-mini"


@pytest.mark.parametrize("text,seconds", [("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0),
                                          ("1.5s", 1.5), ("5", None), ("s", None), ("-1s", None)])
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_admission_settings_parse() -> None:
    from extproc.limits import Per, Unit

    cfg = load_file(str(FIXTURES / "config" / "valid" / "admission.yaml"))
    t = cfg.tenants[0]
    assert (t.priority, t.deadline) == ("batch", 30.0)
    assert [(x.unit, x.per, x.amount, dict(x.key_fields)) for x in t.limits] == [
        (Unit.TOKENS, Per.MINUTE, 100000.0, {"tenant": "t", "model": "*", "priority": "*"}),
        (Unit.USD, Per.DAY, 2.5, {"tenant": "t", "model": "r", "priority": "batch"}),
        (Unit.REQUESTS, Per.SECOND, 10.0, {"tenant": "t", "model": "a", "priority": "*"}),
    ]
    assert t.limits[1].label == "batch-spend" and t.limits[1].capacity == 2_500_000
    assert cfg.models[0].max_concurrency == 32 and cfg.rate_limited
    rl, ad = cfg.rate_limit, cfg.admission
    assert (rl.store, rl.redis_url, rl.failure_mode, rl.timeout, rl.port, rl.metrics_port) == (
        "redis", "redis://127.0.0.1:6390/0", "closed", 0.05, 50071, 50072)
    assert (ad.queue_timeout, ad.share("batch"), ad.share("default"), ad.share("interactive")) == (0.25, 0.25, 0.6, 1.0)
    assert ad.success_rate_threshold == 0 and ad.max_heap_bytes == 1 << 30
    demo = load_file(str(FIXTURES / "config" / "valid" / "minimal.yaml"))
    assert not demo.rate_limited and demo.tenants[0].priority == "default" and demo.tenants[0].deadline == 0


PORTS_CONFIG = """
extproc: {port: 20000, workers: 0}
rate_limit: {port: 20002}
providers: [{name: openai, type: openai, api_key_env: K}]
models: [{name: a, provider: openai}]
tenants: [{name: t, api_key_sha256: ["%s"]}]
""" % ("0" * 64)


@pytest.mark.parametrize("command", [["run", "--workers", "3"], ["extproc"]])
def test_worker_ports_clashing_once_the_worker_count_is_known_stop_the_start(
        command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`workers: 0` is one per core: the file is valid (worker 0 clashes with nothing), but on a
    3-core machine (or with `--workers 3`) worker 2 would take the rate-limit port. Nothing starts."""
    path = tmp_path / "gw.yaml"
    path.write_text(PORTS_CONFIG)
    assert main(["check", "-c", str(path)]) == 0
    capsys.readouterr()
    monkeypatch.setattr("extproc.envoyconf.render.os.cpu_count", lambda: 3)
    assert main([command[0], "-c", str(path), *command[1:]]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "rate_limit.port: 20002 is one of the ext_proc workers' ports (20000-20002 for 3 workers)"]


MINIMAL = """\
providers: [{name: openai, type: openai, api_key_env: K}]
models: [{name: a, provider: openai}, {name: b, provider: openai}]
tenants:
  - name: t
    api_key_sha256: ["%s"]
    models: [a]
""" % ("0" * 64)


def test_a_duplicate_key_is_an_error_with_its_line_not_the_last_one_winning() -> None:
    """A second `models:` would otherwise widen the tenant to every model."""
    assert load_text(MINIMAL).tenants[0].models == ("a",)
    with pytest.raises(ConfigError) as e:
        load_text(MINIMAL + '    models: ["*"]\n')
    assert e.value.problems == ["tenants[0].models: duplicate key at line 7, column 5 (first at line 6)"]


def test_duplicate_keys_are_reported_with_every_other_problem() -> None:
    """... and the rest is checked as YAML reads it: the last of the duplicates."""
    text = MINIMAL.replace("models: [a]", "models: [a]\n    priority: urgent\n    priority: batch") + "tenants: [{name: u}]\n"
    with pytest.raises(ConfigError) as e:
        load_text(text)
    assert e.value.problems == [
        "tenants[0].priority: duplicate key at line 8, column 5 (first at line 7)",
        "tenants: duplicate key at line 9, column 1 (first at line 3)",
        "tenants[0].api_key_sha256: required"]


@pytest.mark.parametrize("text", [
    # Keys beside a merge key override the merged ones: YAML's design, not a duplicate.
    "base: &base {type: openai, api_key_env: K}\nother: {<<: *base, type: anthropic}\n",
    "a: &m {x: 1}\nb: *m\nc: *m\n",  # one node reached by several aliases is checked once
    "x: {1: a, '1': b}\n",  # an int and a string: two keys
    "- {a: 1}\n- {a: 2}\n",  # the same key in sibling mappings
])
def test_what_is_not_a_duplicate_key(text: str) -> None:
    assert parse_yaml(text) is not None


@pytest.mark.parametrize(("text", "problem"), [
    ("x: {1: a, 0x1: b}\n", "x.1: duplicate key at line 1, column 11 (first at line 1)"),  # one int, spelt twice
    ("a:\n  - b: 1\n    c: 2\n    b: 3\n", "a[0].b: duplicate key at line 4, column 5 (first at line 2)"),
    ("a: &m {x: 1, x: 2}\nb: *m\n", "a.x: duplicate key at line 1, column 14 (first at line 1)"),
])
def test_where_a_duplicate_key_is_reported(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_yaml(text, "f.yaml")
    assert e.value.problems == [problem]


@pytest.mark.parametrize(("tenant", "priority", "priorities", "top"), [
    ("{}", "default", (), "default"),
    ("{priority: batch}", "batch", (), "batch"),
    ("{priority: interactive}", "interactive", (), "interactive"),
    ("{priorities: [batch, default, interactive]}", "default", ("batch", "default", "interactive"), "interactive"),
    ("{priority: batch, priorities: [default, batch]}", "batch", ("default", "batch"), "default"),
])
def test_a_tenants_priority_entitlement(tenant: str, priority: str, priorities: tuple[str, ...], top: str) -> None:
    text = ("providers: [{name: openai, type: openai, api_key_env: K}]\nmodels: [{name: a, provider: openai}]\n"
            f"tenants: [{{name: t, api_key_sha256: ['{'0' * 64}'], " + tenant.strip("{}") + "}]\n")
    [t] = load_text(text.replace(", }", "}")).tenants
    assert (t.priority, t.priorities, t.top_priority) == (priority, priorities, top)
