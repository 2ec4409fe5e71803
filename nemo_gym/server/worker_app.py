"""`workers: N`: uvicorn's supervisor and the app factory its worker processes run.

uvicorn starts workers by import string, and an import string takes no arguments, so the
parent hands each worker what it needs through the environment the workers inherit: the
private config file the parent was started with, the instance name and the server class.
Both ends of that hand-over live here.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import uvicorn

from nemo_gym.server.context import (
    CONFIG_FILE_VAR,
    INSTANCE_VAR,
    RuntimeContext,
    context_from_file,
    write_context_file,
)
from nemo_gym.server.gc_tuning import tune_gc

SERVER_CLASS_VAR = "NEMO_GYM_SERVER_CLASS"


def serve_workers(
    context: RuntimeContext, server_class: str, process_count: int, uvicorn_options: dict[str, Any]
) -> None:
    """Serve with `process_count` processes sharing the listening socket; `server_class` is
    `module:Class`, importable in a fresh process."""
    if not os.environ.get(CONFIG_FILE_VAR):  # started by hand: no file from ng_run to share
        os.environ[CONFIG_FILE_VAR] = str(write_context_file(context))
        os.environ[INSTANCE_VAR] = context.instance_name
    os.environ[SERVER_CLASS_VAR] = server_class
    try:
        uvicorn.run(f"{__name__}:create_app", factory=True, workers=process_count, **uvicorn_options)
    except KeyboardInterrupt:
        pass


def create_app() -> Any:
    """The app of one worker process, rebuilt from what the parent handed over."""
    module_name, _, class_name = os.environ[SERVER_CLASS_VAR].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    context = context_from_file(os.environ[CONFIG_FILE_VAR], os.environ[INSTANCE_VAR])
    server = cls.from_context(context)
    app = server.build_asgi()
    tune_gc(server.config.gc_thresholds)
    return app
