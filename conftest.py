"""Root conftest: hermetic config for every test folder (tests/ and the server folders)."""

from __future__ import annotations

import os

os.environ["NEMO_GYM_ENV_YAML"] = "none"
