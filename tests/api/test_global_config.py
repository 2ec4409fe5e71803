"""nemo_gym.global_config: the running config from ng_run's runtime file or from argv, cached."""

from __future__ import annotations

import sys

import pytest
from omegaconf import DictConfig, OmegaConf

from nemo_gym import global_config as gc
from nemo_gym.server.context import CONFIG_FILE_VAR, INSTANCE_VAR, RuntimeContext, write_context_file


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    for var in (CONFIG_FILE_VAR, INSTANCE_VAR, gc.NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME):
        monkeypatch.delenv(var, raising=False)
    gc.reset_global_config_dict()
    yield
    gc.reset_global_config_dict()


def test_constants():
    assert gc.TASK_INDEX_KEY_NAME == "_ng_task_index"
    assert gc.ROLLOUT_INDEX_KEY_NAME == "_ng_rollout_index"
    assert gc.SKILLS_REF_KEY_NAME == "skills_ref"
    assert gc.CACHE_DIR_KEY_NAME == "cache_dir"
    assert gc.OBSERVABILITY_ENABLED_KEY_NAME == "observability_enabled"
    assert gc.TOKEN_ID_CAPTURE_BLOCK == "token_id_capture"
    assert gc.POLICY_MODEL_KEY_NAME == "policy_model"


def test_get_first_server_config_dict():
    cfg = OmegaConf.create({"math": {"resources_servers": {"math_with_judge": {"port": 9, "judge": "j"}}}})
    assert gc.get_first_server_config_dict(cfg, "math") == {"port": 9, "judge": "j"}
    assert gc.get_first_server_config_dict(OmegaConf.to_container(cfg), "math")["port"] == 9


def test_config_from_ng_run_runtime_file(monkeypatch, tmp_path):
    config = {
        "policy_model": {"responses_api_models": {"vllm_model": {"host": "127.0.0.1", "port": 1234}}},
        "cache_dir": str(tmp_path),
    }
    path = write_context_file(
        RuntimeContext(global_config=config, origins={}, instance_name="policy_model", session_secret="s")
    )
    try:
        monkeypatch.setenv(CONFIG_FILE_VAR, str(path))
        monkeypatch.setenv(INSTANCE_VAR, "policy_model")
        assert gc.maybe_get_global_config_dict() is not None
        loaded = gc.get_global_config_dict()
        assert isinstance(loaded, DictConfig)
        assert loaded.cache_dir == str(tmp_path)
        assert gc.get_first_server_config_dict(loaded, "policy_model").port == 1234
        assert gc.get_global_config_dict() is loaded  # cached
    finally:
        path.unlink()


def test_config_from_argv(monkeypatch, tmp_path):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(
        "my_server:\n  resources_servers:\n    impl:\n      entrypoint: app.py\n      value: 3\n"
    )
    monkeypatch.setattr(sys, "argv", ["app.py", f"+config_paths=[{yaml_path}]", "+extra=7", "-q"])
    assert gc.maybe_get_global_config_dict() is None
    loaded = gc.get_global_config_dict()
    assert isinstance(loaded, DictConfig)
    assert loaded.extra == 7
    assert gc.get_first_server_config_dict(loaded, "my_server").value == 3
    assert gc.maybe_get_global_config_dict() is loaded


def test_parser_with_initial_dict(tmp_path, monkeypatch):
    yaml_path = tmp_path / "b.yaml"
    yaml_path.write_text(
        "bench:\n  resources_servers:\n    impl:\n      entrypoint: app.py\n      k: ${policy_model_name}x\n"
    )
    monkeypatch.setattr(sys, "argv", ["app.py", "+ignored=1"])
    parsed = gc.GlobalConfigDictParser().parse(
        gc.GlobalConfigDictParserConfig(
            initial_global_config_dict=OmegaConf.merge(
                gc.GlobalConfigDictParserConfig.NO_MODEL_GLOBAL_CONFIG_DICT,
                {"config_paths": [str(yaml_path)]},
            ),
            skip_load_from_cli=True,
            skip_load_from_dotenv=True,
        )
    )
    assert parsed.bench.resources_servers.impl.entrypoint == "app.py"
    assert "ignored" not in parsed
    assert parsed.policy_model_name == ""


def test_inline_env_config(monkeypatch):
    monkeypatch.setenv(gc.NEMO_GYM_CONFIG_DICT_ENV_VAR_NAME, '{"a": {"b": 1}}')
    assert gc.maybe_get_global_config_dict().a.b == 1
