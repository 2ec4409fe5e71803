"""Stage (a') of the compat tier: NeMo Gym 0.7.0's `environments/` bundles load as `ng_run` loads
them: the bundle's config with its nested `config_paths` (found through NEMO_GYM_EXTRA_ROOTS), its
manifest validated, and every server instance it composes found, with our vllm_model as the policy.

Each config file of a bundle folder is one entry (`environments/NAME` for config.yaml,
`environments/NAME/STEM` for the others); nothing is started, so this runs in the harness process.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from nemo_gym.config import PROJECT_ROOT

OUR_MODEL_CONFIG = PROJECT_ROOT / "responses_api_models/vllm_model/configs/vllm_model.yaml"
MODEL_VALUES = [
    "+policy_base_url=http://127.0.0.1:9/v1",
    "+policy_api_key=EMPTY",
    "+policy_model_name=sim-model",
]
# Overrides a bundle's own README runs it with (here: the policy as the judge, not a second server).
AS_DOCUMENTED = {
    "environments/abstention": [
        "+abstention.resources_servers.abstention.judge_model_server.name=policy_model"
    ],
}
_UNSET_VARIABLE = re.compile(r"Interpolation key '([A-Za-z_]\w*)' not found")


def bundle_configs(root: Path) -> dict[str, Path]:
    """`environments/NAME[/STEM]` → its config file, for every config*.yaml of every bundle folder."""
    found = {}
    for config in sorted((root / "environments").glob("*/config*.yaml")):
        name = f"environments/{config.parent.name}"
        found[name if config.stem == "config" else f"{name}/{config.stem}"] = config
    return found


def _load(root: Path, config: Path, args: list[str]) -> tuple[Any, list[str]]:
    """Instances of the config; a `${name}` left to the user (an API model name, …) gets a
    placeholder, as a user would supply one, and is listed."""
    from nemo_gym.config import ConfigError, discover_instances, load_config

    supplied: list[str] = []
    while True:
        try:
            extra = [f"+{name}=placeholder" for name in supplied]
            base = [f"+config_paths=[{OUR_MODEL_CONFIG},{config}]", *MODEL_VALUES]
            return discover_instances(load_config([*base, *args, *extra], cwd=root)), supplied
        except ConfigError as exc:
            unset = _UNSET_VARIABLE.search(str(exc))
            if not unset or unset.group(1) in supplied:
                raise
            supplied.append(unset.group(1))


def load_one(root: Path, config: Path, args: list[str] | None = None) -> tuple[str, str, dict]:
    """(status, error line, detail) of loading one bundle config."""
    before = os.environ.get("NEMO_GYM_EXTRA_ROOTS")
    os.environ["NEMO_GYM_EXTRA_ROOTS"] = str(root)
    try:
        instances, supplied = _load(root, config, args or [])
    except Exception as exc:  # noqa: BLE001 - every failure is the result
        message = " ".join(str(exc).split())
        return "load_error", f"{type(exc).__name__}: {message}"[:300], {}
    finally:
        if before is None:
            os.environ.pop("NEMO_GYM_EXTRA_ROOTS", None)
        else:
            os.environ["NEMO_GYM_EXTRA_ROOTS"] = before
    missing = [i.impl_key() for i in instances if not i.entrypoint.is_file()]
    detail = {
        "instances": [f"{i.name}: {i.implementation}" for i in instances],
        "manifest": (config.parent / "manifest.yaml").is_file(),
        "placeholders": supplied,
    }
    if missing:
        return "entrypoint_error", f"no entrypoint file for {', '.join(missing)}", detail
    return "ok", "", detail


def timed(root: Path, name: str, config: Path) -> tuple[str, str, str, dict, float]:
    started = time.monotonic()
    status, error, detail = load_one(root, config, AS_DOCUMENTED.get(name))
    return name, status, error, detail, round(time.monotonic() - started, 2)
