"""nemo_gym: NeMo Gym-compatible rollout collection around a fast vLLM adapter.

The package itself exports what NeMo Gym environments import from `nemo_gym` directly: the
checkout and working directories and the path resolution their file lookups use.
"""

from nemo_gym.paths import (
    CACHE_DIR,
    NEMO_GYM_EXTRA_ROOTS_ENV_VAR_NAME,
    PARENT_DIR,
    RESULTS_DIR,
    ROOT_DIR,
    WORKING_DIR,
    component_search_roots,
)
from nemo_gym.paths import resolve_under_cwd_or_install as _resolve_under_cwd_or_install

__all__ = [
    "CACHE_DIR",
    "NEMO_GYM_EXTRA_ROOTS_ENV_VAR_NAME",
    "PARENT_DIR",
    "RESULTS_DIR",
    "ROOT_DIR",
    "WORKING_DIR",
    "_resolve_under_cwd_or_install",
    "component_search_roots",
]
