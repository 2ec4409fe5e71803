"""Config loading: priority, nesting, interpolation, comma lists, and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_gym.config import ConfigError, assign_ports, discover_instances, load_config, redact

ECHO = str(Path(__file__).parent / "servers" / "echo_app.py")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "base.yaml", "a: from_base\nb: from_base\nc: from_base\nnested:\n  x: 1\n  y: 2\n")
    write(tmp_path / "top.yaml", "config_paths: [base.yaml]\nb: from_top\n")
    return tmp_path


def test_priority_file_then_env_yaml_then_cli(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = write(files / "env.yaml", "c: from_env\nb: from_env\n")
    monkeypatch.setenv("NEMO_GYM_ENV_YAML", str(env))
    loaded = load_config(["+config_paths=[top.yaml]", "+c=from_cli", "+nested.y=3"])
    cfg = loaded.config
    assert (cfg.a, cfg.b, cfg.c) == ("from_base", "from_env", "from_cli")
    assert OmegaConf.to_container(cfg.nested) == {"x": 1, "y": 3}
    assert loaded.source_of("a") == str(files / "base.yaml") and loaded.source_of("c") == "command line"


def test_env_yaml_found_in_cwd(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEMO_GYM_ENV_YAML")
    write(files / "env.yaml", "a: from_cwd_env\n")
    assert load_config(["+config_paths=[top.yaml]"]).config.a == "from_cwd_env"


def test_nested_config_paths_loaded_once(files: Path) -> None:
    write(files / "other.yaml", "config_paths: [base.yaml]\nd: other\n")
    loaded = load_config(["+config_paths=[top.yaml,other.yaml]"])
    assert loaded.files == [str(files / "base.yaml"), str(files / "top.yaml"), str(files / "other.yaml")]
    assert (loaded.config.b, loaded.config.d) == ("from_top", "other")


def test_interpolation_against_root(files: Path) -> None:
    write(files / "i.yaml", "srv:\n  url: ${policy_base_url}\n  name: m-${policy_model_name}\n")
    cfg = load_config(
        ["+config_paths=[i.yaml]", "+policy_base_url=http://h:1/v1", "+policy_model_name=q"]
    ).config
    assert (cfg.srv.url, cfg.srv.name) == ("http://h:1/v1", "m-q")


def test_unresolvable_interpolation_names_key_and_file(files: Path) -> None:
    write(files / "i.yaml", "srv:\n  url: ${policy_base_url}\n")
    with pytest.raises(ConfigError) as info:
        load_config(["+config_paths=[i.yaml]"])
    assert str(info.value).startswith(
        f"config key 'srv.url' (from {files / 'i.yaml'}): cannot resolve interpolation"
    )


def test_missing_env_yaml_is_named_as_the_cause(files: Path) -> None:
    from nemo_gym.config import PROJECT_ROOT

    write(files / "i.yaml", "srv:\n  url: ${policy_base_url}\n")
    with pytest.raises(ConfigError) as info:
        load_config(["+config_paths=[i.yaml]"])
    assert str(info.value) == (
        f"config key 'srv.url' (from {files / 'i.yaml'}): cannot resolve interpolation: "
        "Interpolation key 'policy_base_url' not found "
        f"(no env.yaml in {files.resolve()} or {PROJECT_ROOT}; copy env.yaml.example)"
    )


def test_present_env_yaml_gets_no_env_yaml_hint(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_GYM_ENV_YAML", str(write(files / "env.yaml", "other: 1\n")))
    write(files / "i.yaml", "srv:\n  url: ${policy_base_url}\n")
    with pytest.raises(ConfigError) as info:
        load_config(["+config_paths=[i.yaml]"])
    assert "env.yaml" not in str(info.value)


@pytest.mark.parametrize(
    "arg",
    [
        "+srv.base_url=http://a:1/v1,http://b:2/v1",
        "+srv.base_url='http://a:1/v1, http://b:2/v1,'",
        "+srv.base_url=[http://a:1/v1,http://b:2/v1]",
    ],
)
def test_comma_separated_base_url_becomes_list(files: Path, arg: str) -> None:
    assert list(load_config([arg]).config.srv.base_url) == ["http://a:1/v1", "http://b:2/v1"]


def test_mandatory_value_unset(files: Path) -> None:
    write(files / "m.yaml", "policy_model:\n  responses_api_models:\n    vllm_model:\n      api_key: ???\n")
    with pytest.raises(ConfigError) as info:
        load_config(["+config_paths=[m.yaml]"])
    assert str(info.value) == (
        f"config key 'policy_model.responses_api_models.vllm_model.api_key' (from {files / 'm.yaml'}): is mandatory ('???') "
        "but was not set; set it in env.yaml or with '+policy_model.responses_api_models.vllm_model.api_key=...' on the command line"
    )


def test_broken_reference_names_missing_instance(files: Path) -> None:
    write(
        files / "r.yaml",
        f"agent:\n  responses_api_agents:\n    simple_agent:\n      entrypoint: {ECHO}\n"
        "      model_server:\n        type: responses_api_models\n        name: policy_model\n"
        f"other_model:\n  responses_api_models:\n    echo:\n      entrypoint: {ECHO}\n",
    )
    with pytest.raises(ConfigError) as info:
        discover_instances(load_config(["+config_paths=[r.yaml]"]))
    assert str(info.value) == (
        f"config key 'agent.responses_api_agents.simple_agent.model_server' (from {files / 'r.yaml'}): refers to "
        "responses_api_models instance 'policy_model', which is not defined. Defined responses_api_models instances: other_model"
    )


def test_missing_entrypoint_file(files: Path) -> None:
    write(files / "e.yaml", "x:\n  resources_servers:\n    nope:\n      entrypoint: app.py\n")
    with pytest.raises(
        ConfigError,
        match=r"config key 'x.resources_servers.nope.entrypoint' \(from .*e.yaml\): points to .*does not exist",
    ):
        discover_instances(load_config(["+config_paths=[e.yaml]"]))


def test_missing_config_file_and_bad_override(files: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"config key 'config_paths' \(from command line\): config file 'nope.yaml' does not exist",
    ):
        load_config(["+config_paths=[nope.yaml]"])
    with pytest.raises(ConfigError, match=r"cannot parse override '\+a=\[1,'"):
        load_config(["+a=[1,"])


def test_instances_ports_and_head_default(files: Path) -> None:
    write(
        files / "s.yaml",
        f"one:\n  resources_servers:\n    echo:\n      entrypoint: {ECHO}\n      port: 12345\ntwo:\n  resources_servers:\n    echo:\n      entrypoint: {ECHO}\n",
    )
    loaded = load_config(["+config_paths=[s.yaml]"])
    assert OmegaConf.to_container(loaded.config.head_server) == {"host": "127.0.0.1", "port": 11000}
    instances = assign_ports(loaded, discover_instances(loaded))
    assert [(i.name, i.host) for i in instances] == [("one", "127.0.0.1"), ("two", "127.0.0.1")]
    assert instances[0].port == 12345 and instances[1].port not in (None, 12345, 11000)
    assert loaded.config.two.resources_servers.echo.port == instances[1].port


def test_redaction_rule() -> None:
    cfg = {
        "policy_api_key": "sk-1",
        "x": {
            "hf_token": "t",
            "max_tokens": 5,
            "return_token_id_information": True,
            "db_password": "p",
            "session_secret": "s",
        },
    }
    assert redact(cfg) == {
        "policy_api_key": "<redacted>",
        "x": {
            "hf_token": "<redacted>",
            "max_tokens": 5,
            "return_token_id_information": True,
            "db_password": "<redacted>",
            "session_secret": "<redacted>",
        },
    }
