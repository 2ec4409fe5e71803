"""`workers: N`: uvicorn's supervisor and the app factory its worker processes run.

uvicorn starts workers by import string, and an import string takes no arguments, so the
parent hands each worker what it needs through the environment the workers inherit: the
private config file the parent was started with, the instance name and the server class (a module
of this checkout by its import name, a server anywhere else, such as a NeMo Gym checkout named in
NEMO_GYM_EXTRA_ROOTS, by its file, loaded as `python app.py` would run it). Both ends of that
hand-over live here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from nemo_gym.server.context import (
    CONFIG_FILE_VAR,
    INSTANCE_VAR,
    RuntimeContext,
    context_from_file,
    write_context_file,
)
from nemo_gym.server.gc_tuning import tune_gc

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


def serve_workers(
    context: RuntimeContext,
    server_class: str,
    process_count: int,
    uvicorn_options: dict[str, Any],
    listener: socket.socket | None = None,
) -> None:
    """Serve with `process_count` processes sharing the listening socket; `server_class` is what
    `server_class_reference` made, loadable in a fresh process."""
    if not os.environ.get(CONFIG_FILE_VAR):  # started by hand: no file from ng_run to share
        os.environ[CONFIG_FILE_VAR] = str(write_context_file(context))
        os.environ[INSTANCE_VAR] = context.instance_name
    os.environ[SERVER_CLASS_VAR] = server_class
    config = uvicorn.Config(f"{__name__}:create_app", factory=True, workers=process_count, **uvicorn_options)
    try:
        # What uvicorn.run does for workers, with the socket handed down when there is one.
        Multiprocess(config, sockets=[listener if listener is not None else config.bind_socket()]).run()
    except KeyboardInterrupt:
        pass


def create_app() -> Any:
    """The app of one worker process, rebuilt from what the parent handed over."""
    cls = load_server_class(os.environ[SERVER_CLASS_VAR])
    context = context_from_file(os.environ[CONFIG_FILE_VAR], os.environ[INSTANCE_VAR])
    server = cls.from_context(context)
    app = server.build_asgi()
    tune_gc(server.config.gc_thresholds)
    return app
