"""Where a relative path a user or an environment names is looked for.

NeMo Gym resolves files named in configs and code (`config_paths` entries, dataset and prompt
files, skill directories) against an ordered list of roots: the directories in
`NEMO_GYM_EXTRA_ROOTS` first (so a plug-in tree can shadow a built-in), then the working
directory, then the checkout this package lives in. Environments import these helpers from
`nemo_gym` itself, so the same order applies to them and to our config loader.

Last come the trees the component packages (`resources_servers`, `responses_api_agents`, …)
are imported from when that is not this checkout: NeMo Gym resolves a server's repo-relative
files (`resources_servers/<name>/prompts/…`) against the tree it was installed in, which for a
server brought in from another tree is that tree.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

NEMO_GYM_EXTRA_ROOTS_ENV_VAR_NAME = "NEMO_GYM_EXTRA_ROOTS"

ROOT_DIR = Path(__file__).resolve().parent
PARENT_DIR = ROOT_DIR.parent
# A source checkout keeps its caches and results next to the code; an installed package uses the cwd.
WORKING_DIR = PARENT_DIR if (PARENT_DIR / "pyproject.toml").exists() else Path.cwd()
CACHE_DIR = WORKING_DIR / "cache"
RESULTS_DIR = WORKING_DIR / "results"
_COMPONENT_PACKAGES = (
    "resources_servers",
    "responses_api_agents",
    "responses_api_models",
    "environment_servers",
)


def extra_roots() -> list[Path]:
    """The roots named by `NEMO_GYM_EXTRA_ROOTS` (os.pathsep-separated), read at call time."""
    raw = os.environ.get(NEMO_GYM_EXTRA_ROOTS_ENV_VAR_NAME, "")
    return [Path(part) for part in raw.split(os.pathsep) if part]


@lru_cache(maxsize=1)
def component_package_roots() -> tuple[Path, ...]:
    """The trees the component packages are imported from (each package may span several)."""
    roots: list[Path] = []
    for name in _COMPONENT_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            roots.append(Path(location).parent)
    return tuple(roots)


def component_search_roots(*, sys_path: list[Path] | None = None) -> list[Path]:
    """Extra roots, then `sys_path` entries, then the cwd and this checkout, then the other trees
    the component packages come from; each root once.

    The cwd and the checkout come after anything a user adds, so user trees win over the built-ins.
    """
    last = [Path.cwd(), PARENT_DIR, *component_package_roots()]
    last_resolved = {root.resolve() for root in last}
    middle = [entry for entry in (sys_path or []) if entry.resolve() not in last_resolved]
    roots: list[Path] = []
    seen: set[Path] = set()
    for root in (*extra_roots(), *middle, *last):
        resolved = root.resolve()
        if resolved not in seen:
            seen.add(resolved)
            roots.append(root)
    return roots


def resolve_under_cwd_or_install(
    rel_path: str | Path, *, validator: Callable[[Path], bool] | None = None
) -> Path:
    """A path to read: absolute paths as given, else the first root where it exists.

    When no root has it, the path under the first root comes back, so an error message names
    the place the user most likely meant. Not for paths to write.
    """
    path = Path(rel_path)
    if path.is_absolute():
        return path
    accept = validator or Path.exists
    roots = component_search_roots()
    for root in roots:
        candidate = root / path
        if accept(candidate):
            return candidate
    return roots[0] / path
