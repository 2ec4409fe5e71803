"""NeMo Gym's `_inherit_from` / `_copy` composition keys, as the config loader applies them."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_gym.config import ConfigError, load_config
from nemo_gym.config.inheritance import apply_composition


def loaded(tmp_path: Path, text: str, *args: str) -> dict:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    from omegaconf import OmegaConf

    config = load_config([f"+config_paths=[{path}]", *args], cwd=tmp_path, env_yaml=None).config
    return OmegaConf.to_container(config)


AGENT = """
cline_agent:
  responses_api_agents:
    cline_agent:
      entrypoint: app.py
      max_turns: 8
      resources_server: {type: resources_servers, name: "???"}
"""


def test_inherit_from_renames_an_instance_keeping_its_block(tmp_path: Path) -> None:
    config = loaded(
        tmp_path,
        AGENT
        + """
cline_math_agent:
  _inherit_from: cline_agent
  responses_api_agents:
    cline_agent:
      resources_server: {type: resources_servers, name: math}
""",
    )
    assert "cline_agent" not in config
    assert config["cline_math_agent"] == {
        "responses_api_agents": {
            "cline_agent": {
                "entrypoint": "app.py",
                "max_turns": 8,
                "resources_server": {"type": "resources_servers", "name": "math"},
            }
        }
    }


def test_copy_keeps_the_source_and_string_forms_take_values(tmp_path: Path) -> None:
    config = loaded(
        tmp_path,
        """
base: {lr: 0.1, steps: 10}
tuned: {_copy: base, lr: 0.2}
moved: ${inherit_from:old.value}
copied: ${copy:base.steps}
old: {value: 3, other: 4}
""",
    )
    assert config["base"] == {"lr": 0.1, "steps": 10}
    assert config["tuned"] == {"lr": 0.2, "steps": 10}
    assert (config["moved"], config["copied"]) == (3, 10)
    assert config["old"] == {"other": 4}


def test_chained_inheritance_and_command_line_on_top(tmp_path: Path) -> None:
    config = loaded(
        tmp_path,
        "a: {x: 1, y: 1}\nb: {_inherit_from: a, y: 2}\nc: {_inherit_from: b, z: 3}\n",
        "+c.x=9",
    )
    assert config == {
        "c": {"x": 9, "y": 2, "z": 3},
        "head_server": config["head_server"],
        "config_paths": [str(tmp_path / "c.yaml")],
    }


def test_unknown_source_names_the_key_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        loaded(tmp_path, "b: {_inherit_from: nowhere, y: 2}\n")
    assert str(info.value) == (
        f"config key 'b._inherit_from' (from {tmp_path / 'c.yaml'}): refers to 'nowhere', which is not defined"
    )


def test_a_cycle_is_refused() -> None:
    with pytest.raises(ConfigError, match="inherits in a cycle"):
        apply_composition({"a": {"_copy": "a"}}, {})
