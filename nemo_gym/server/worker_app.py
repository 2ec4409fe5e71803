"""App factory for uvicorn worker processes (`workers: N`).

uvicorn starts workers by import string, so each worker rebuilds the server from the same
private config file the parent was started with and the server class named in the env: a module
of this checkout by its import name, a server anywhere else (a NeMo Gym checkout named in
NEMO_GYM_EXTRA_ROOTS) by its file, loaded as `python app.py` would run it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

SERVER_CLASS_VAR = "NEMO_GYM_SERVER_CLASS"


def server_class_reference(entrypoint: Path, class_name: str) -> str:
    """`module:Class` for an entrypoint of this checkout, `/path/to/app.py:Class` for any other."""
    from nemo_gym.config import PROJECT_ROOT

    path = entrypoint.resolve()
    inside = path.is_relative_to(PROJECT_ROOT) and not any(
        part.startswith(".") for part in path.relative_to(PROJECT_ROOT).parts
    )
    if inside:
        return f"{'.'.join(path.relative_to(PROJECT_ROOT).with_suffix('').parts)}:{class_name}"
    return f"{path}:{class_name}"


def load_server_class(reference: str) -> Any:
    location, _, class_name = reference.rpartition(":")
    if not location.endswith(".py"):
        return getattr(importlib.import_module(location), class_name)
    path = Path(location)
    sys.path.insert(0, str(path.parent))  # as `python app.py` puts its folder first
    spec = importlib.util.spec_from_file_location(f"_nemo_gym_entrypoint_{path.parent.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, class_name)


def create_app() -> Any:
    from nemo_gym.server.base import tune_gc
    from nemo_gym.server.context import CONFIG_FILE_VAR, INSTANCE_VAR, RuntimeContext, context_from_file

    cls = load_server_class(os.environ[SERVER_CLASS_VAR])
    context: RuntimeContext = context_from_file(os.environ[CONFIG_FILE_VAR], os.environ[INSTANCE_VAR])
    server = cls.from_context(context)
    app = server.build_asgi()
    tune_gc(server.config.gc_thresholds)
    return app
