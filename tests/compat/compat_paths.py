"""Loaded at start-up of the compat venv's interpreters (via a .pth file the harness writes).

NeMo Gym environments import themselves as `resources_servers.<name>.app`; our repo already
owns the `resources_servers` / `responses_api_agents` packages. When NG_COMPAT_EXTRA_ROOTS
names directories (the unzipped reference wheel), this finder lets those packages also
search `<root>/<package>` — after our own directory, so our implementations win on a name
clash (e.g. our `responses_api_agents/simple_agent`), unless NG_COMPAT_WHEEL_FIRST=1 puts the
roots first (the harness sets it to build or test the wheel's copy of a server we also ship).
Inert when NG_COMPAT_EXTRA_ROOTS is unset.
"""

import importlib.abc
import os
import sys

_PACKAGES = ("resources_servers", "responses_api_agents", "responses_api_models", "environment_servers")


class _ExtraRootsFinder(importlib.abc.MetaPathFinder):
    def __init__(self, roots):
        self.roots = roots

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _PACKAGES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.submodule_search_locations is not None:
                first = os.environ.get("NG_COMPAT_WHEEL_FIRST") == "1"
                for index, root in enumerate(self.roots):
                    extra = os.path.join(root, fullname)
                    if os.path.isdir(extra) and extra not in spec.submodule_search_locations:
                        if first:
                            spec.submodule_search_locations.insert(index, extra)
                        else:
                            spec.submodule_search_locations.append(extra)
                return spec
        return None


_roots = [r for r in os.environ.get("NG_COMPAT_EXTRA_ROOTS", "").split(os.pathsep) if r]
if _roots:
    sys.meta_path.insert(0, _ExtraRootsFinder(_roots))
