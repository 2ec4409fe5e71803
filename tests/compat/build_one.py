"""Stage (a) for one environment, in its own process: import its app.py, build its FastAPI app.

    python build_one.py <resources_servers|responses_api_agents> <name> <wheel_root>

Run by harness.build_one with the compat venv's python, cwd = the environment's directory
(as ng_run starts servers). Prints one line `NG_COMPAT_RESULT {json}`:
status ok / <stage>_error, the stage that failed and the error's first line.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

STAGE = "start"
DETAIL: dict[str, Any] = {}


def emit(status: str, error: str = "") -> None:
    print(
        "NG_COMPAT_RESULT " + json.dumps({"status": status, "stage": STAGE, "error": error, "detail": DETAIL})
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # environments may leave threads (Ray, executors) behind


def error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def placeholder(var: str) -> Any:
    if var.endswith("base_url") or var.endswith("_url"):
        return "http://127.0.0.1:9/v1"
    if var.endswith("api_key"):
        return "EMPTY"
    if var.endswith("model_name") or var.endswith("_model"):
        return "sim-model"
    return "placeholder"


def interpolated_names(text: str) -> set[str]:
    return {m for m in re.findall(r"\$\{([A-Za-z_][\w]*)\}", text)}


def find_config(kind: str, name: str, env_dir: Path) -> tuple[Path, str, dict, dict]:
    """The first configs/*.yaml (the one named after the env first) with a `<inst>: {kind: {name: …}}` block.

    Loads it with our own config loader (as ng_run does), placeholders for `${vars}` it leaves to
    the user; falls back to plain OmegaConf (recording why) if our loader rejects the file.
    """
    import yaml
    from omegaconf import OmegaConf

    yamls = sorted((env_dir / "configs").glob("*.yaml"), key=lambda p: (p.stem != name, p.name))
    for path in yamls:
        text = path.read_text()
        raw = yaml.safe_load(text) or {}
        for inst, block in raw.items():
            if isinstance(block, dict) and isinstance(block.get(kind), dict) and name in block[kind]:
                defined = set(raw)
                extras = {v: placeholder(v) for v in interpolated_names(text) if v not in defined}
                try:
                    from nemo_gym.config import load_config

                    args = [f"+config_paths=[{path}]"] + [f"+{k}={v}" for k, v in extras.items()]
                    loaded = load_config(args, cwd=Path(os.environ.get("NG_COMPAT_WHEEL_ROOT", env_dir)))
                    full = OmegaConf.to_container(loaded.config, resolve=True)
                except Exception as exc:  # our loader's verdict is recorded, the build goes on
                    DETAIL["config_loader_error"] = error_line(exc)
                    cfg = OmegaConf.merge(OmegaConf.create(extras), OmegaConf.create(raw))
                    full = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
                return path, inst, full[inst][kind][name], full
    raise LookupError(f"no configs/*.yaml has a '<instance>: {{{kind}: {{{name}: ...}}}}' block")


def main() -> None:
    global STAGE
    kind, name, wheel_root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    os.environ["NG_COMPAT_WHEEL_ROOT"] = str(wheel_root)
    env_dir = wheel_root / kind / name

    STAGE = "core_import"
    if kind == "resources_servers":
        from nemo_gym.base_resources_server import SimpleResourcesServer as Base
    else:
        from nemo_gym.base_responses_api_agent import SimpleResponsesAPIAgent as Base
    from nemo_gym.server_utils import ServerClient

    STAGE = "import"
    # `python app.py` (how ng_run starts a server) puts the app's own directory first on sys.path;
    # environments rely on it for sibling modules (`from utils import …`).
    sys.path[0] = str(env_dir)
    module = importlib.import_module(f"{kind}.{name}.app")
    DETAIL["module_file"] = getattr(module, "__file__", None)
    if DETAIL["module_file"] and not str(DETAIL["module_file"]).startswith(str(wheel_root)):
        raise RuntimeError(f"{kind}.{name}.app resolved to {DETAIL['module_file']}, not the wheel's copy")

    STAGE = "find_class"
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Base)
        and obj is not Base
        and obj.__module__ == module.__name__
    ]
    leaves = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
    if not leaves:
        raise LookupError(f"app.py defines no subclass of {Base.__name__}")
    cls = leaves[0]
    DETAIL["class"] = cls.__name__

    STAGE = "config"
    path, instance, block, full = find_config(kind, name, env_dir)
    DETAIL["config"] = f"{path.relative_to(wheel_root)}:{instance}"
    fields = getattr(cls, "model_fields", {})
    config_cls = (
        fields["config"].annotation if "config" in fields else inspect.get_annotations(cls).get("config")
    )
    if isinstance(config_cls, str) or config_cls is None:
        import typing

        config_cls = typing.get_type_hints(cls).get("config")
    DETAIL["config_class"] = getattr(config_cls, "__name__", str(config_cls))

    STAGE = "config_validate"
    port = free_port()
    values = {**block, "name": instance, "host": "127.0.0.1", "port": port}
    config = config_cls.model_validate(values)

    STAGE = "construct"
    block.update(host="127.0.0.1", port=port)
    full.setdefault("head_server", {"host": "127.0.0.1", "port": free_port()})
    try:
        client = ServerClient(full)
    except TypeError:
        from omegaconf import OmegaConf

        client = ServerClient(
            head_server_config=full["head_server"], global_config_dict=OmegaConf.create(full)
        )
    server = cls(config=config, server_client=client)

    STAGE = "setup_webserver"
    app = server.setup_webserver()
    from fastapi import FastAPI

    if not isinstance(app, FastAPI):
        raise TypeError(f"setup_webserver() returned {type(app).__name__}, not FastAPI")
    routes = sorted({getattr(r, "path", "") for r in app.routes} - {""})
    DETAIL["routes"] = routes
    expected = ["/verify"] if kind == "resources_servers" else ["/run"]
    missing = [r for r in expected if r not in routes]
    if missing:
        STAGE = "routes"
        raise LookupError(f"app has no {', '.join(missing)} route (routes: {', '.join(routes)})")
    STAGE = "done"
    emit("ok")


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:  # noqa: BLE001 - every failure is the result
        DETAIL["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
        emit(f"{STAGE}_error", error_line(exc))
