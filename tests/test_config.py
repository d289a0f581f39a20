import pytest

from inferwatch.config import Config, ConfigError, interpolate_env, load_config, parse_config


def test_defaults_load_without_a_file():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.proxy.port == 8080 and cfg.admin.port == 9180
    assert cfg.window.max_events == 10_000


def test_yaml_with_env_interpolation(tmp_path, monkeypatch):
    monkeypatch.setenv("UPSTREAM", "http://model:9000")
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: {name: fraud, version: '3'}\n"
        "upstream: {url: '${UPSTREAM}', timeout_seconds: 2}\n"
        "admin:\n  port: ${ADMIN_PORT:-9999}\n"
        "payload:\n  features: [a, {name: b, type: categorical}]\n"
    )
    cfg = load_config(path)
    assert cfg.upstream.url == "http://model:9000"
    assert cfg.admin.port == 9999
    assert cfg.model.version == "3"
    assert cfg.payload.feature_names == ["a", "b"]
    assert cfg.payload.features[1].type == "categorical"


def test_cli_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("proxy: {port: 1234}\n")
    cfg = load_config(path, {"proxy.port": 4321, "payload.features": "x,y", "model.name": "m"})
    assert cfg.proxy.port == 4321
    assert cfg.payload.feature_names == ["x", "y"]
    assert cfg.model.name == "m"


def test_every_problem_is_reported_with_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "upstream: {url: 'ftp://x', timeout_seconds: fast}\n"
        "proxy: {port: 70000, bogus: 1}\n"
        "payload: {codec: protobuf}\n"
        "window: {max_events: -5}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = "\n".join(info.value.problems)
    assert f"{path}:upstream.timeout_seconds: expected number, got 'fast'" in problems
    assert f"{path}:proxy.bogus: unknown key" in problems
    assert f"{path}:payload.codec: expected one of" in problems
    assert f"{path}:window.max_events: must be greater than 0" in problems
    assert f"{path}:upstream.url: expected an http(s) URL" in problems
    assert f"{path}:proxy.port: expected a port number" in problems


def test_missing_env_var_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        interpolate_env({"a": {"b": "x-${NOPE_NOT_SET}"}}, "f.yaml", environ={})
    assert info.value.problems == ["f.yaml:a.b: environment variable NOPE_NOT_SET is not set and has no default"]


def test_whole_value_variables_take_their_yaml_type():
    data = interpolate_env({"p": "${P}", "s": "v${P}", "t": "${T:-true}", "e": "${E:-}"}, "f", environ={"P": "80"})
    assert data == {"p": 80, "s": "v80", "t": True, "e": None}


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config([1, 2], "x.yaml")


def test_booleans_are_not_numbers():
    with pytest.raises(ConfigError, match="proxy.port: expected integer, got True"):
        parse_config({"proxy": {"port": True}}, "x.yaml")


def _problems(path, text):
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_a_misspelt_key_suggests_the_close_match(tmp_path):
    path = tmp_path / "c.yaml"
    problems = _problems(path, "window: {max_evnts: 5}\nupstreem: {url: 'http://m:8000'}\n")
    assert f"{path}:window.max_evnts: unknown key, did you mean 'max_events'?" in problems
    assert f"{path}:upstreem: unknown key, did you mean 'upstream'?" in problems
    # nothing close: every key, as before
    (far,) = _problems(path, "proxy: {zzz: 1}\n")
    assert far.startswith(f"{path}:proxy.zzz: unknown key (expected one of ") and "port" in far


def test_a_url_or_port_left_empty_is_an_error_not_the_default(tmp_path):
    path = tmp_path / "c.yaml"
    assert _problems(path, "upstream: {url: }\n") == [
        f"{path}:upstream.url: has no value (give one, or remove the key for the default 'http://127.0.0.1:8081')"]
    assert _problems(path, "proxy:\n  port:\n") == [
        f"{path}:proxy.port: has no value (give one, or remove the key for the default 8080)"]
    # an empty section, or an optional value whose default is empty, still means the default
    path.write_text("drift:\nadmin: {write_auth: }\nupstream: {url: 'http://m:8000'}\n")
    assert load_config(path).upstream.url == "http://m:8000"


@pytest.mark.parametrize("text, key", [
    ("upstream: {url: 'http://m:99999'}", "upstream.url"),
    ("upstream: {url: 'http://m:0'}", "upstream.url"),
    ("shadow: {challengers: [{name: c, url: 'http://c:70000'}]}", "shadow.challengers[0].url"),
])
def test_a_url_port_out_of_range_is_an_error(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    problems = _problems(path, text + "\n")
    assert any(p.startswith(f"{path}:{key}: expected a port number 1-65535 in the URL") for p in problems), problems
