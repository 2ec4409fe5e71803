"""Hermetic tests: never read a developer's env.yaml; shared helpers for process tests."""

from __future__ import annotations

import os

os.environ["NEMO_GYM_ENV_YAML"] = "none"
