"""App factory for uvicorn worker processes (`workers: N`).

uvicorn starts workers by import string, so each worker rebuilds the server from the same
private config file the parent was started with and the server class named in the env.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

SERVER_CLASS_VAR = "NEMO_GYM_SERVER_CLASS"


def create_app() -> Any:
    from nemo_gym.server.base import tune_gc
    from nemo_gym.server.context import CONFIG_FILE_VAR, INSTANCE_VAR, RuntimeContext, context_from_file

    module_name, _, class_name = os.environ[SERVER_CLASS_VAR].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    context: RuntimeContext = context_from_file(os.environ[CONFIG_FILE_VAR], os.environ[INSTANCE_VAR])
    server = cls.from_context(context)
    app = server.build_asgi()
    tune_gc(server.config.gc_thresholds)
    return app
