"""Loaded at start-up of the compat venv's interpreters (via a .pth file the harness writes).

NeMo Gym environments import themselves as `resources_servers.<name>.app`; our repo already
owns the `resources_servers` / `responses_api_agents` / ... packages. When NG_COMPAT_EXTRA_ROOTS
names directories (the unzipped reference wheel), this finder lets those packages also search
`<root>/<package>` — after our own directory, so our implementations win on a name clash (e.g.
our `responses_api_agents/simple_agent`).

NG_COMPAT_WHEEL_PACKAGES (comma-separated `package.name`, e.g. `resources_servers.equivalence_llm_judge`)
makes those servers the wheel's copies: the harness sets it to build, test or run the wheel's copy
of a server we also ship (a regular package of ours would otherwise win over the wheel's folder,
whatever the search order). Inert when NG_COMPAT_EXTRA_ROOTS is unset.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

_PACKAGES = ("resources_servers", "responses_api_agents", "responses_api_models", "environment_servers")


class _ExtraRootsFinder(importlib.abc.MetaPathFinder):
    def __init__(self, roots, wheel_packages):
        self.roots = roots
        self.wheel_packages = wheel_packages

    def _wheel_package(self, fullname):
        for root in self.roots:
            folder = os.path.join(root, *fullname.split("."))
            if os.path.isdir(folder):
                init = os.path.join(folder, "__init__.py")
                if os.path.isfile(init):
                    return importlib.util.spec_from_file_location(
                        fullname, init, submodule_search_locations=[folder]
                    )
                spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
                spec.submodule_search_locations = [folder]
                return spec
        return None

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.wheel_packages:
            return self._wheel_package(fullname)
        if fullname not in _PACKAGES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.submodule_search_locations is not None:
                for root in self.roots:
                    extra = os.path.join(root, fullname)
                    if os.path.isdir(extra) and extra not in spec.submodule_search_locations:
                        spec.submodule_search_locations.append(extra)
                return spec
        return None


_roots = [r for r in os.environ.get("NG_COMPAT_EXTRA_ROOTS", "").split(os.pathsep) if r]
_wheel_packages = {p for p in os.environ.get("NG_COMPAT_WHEEL_PACKAGES", "").split(",") if p}
if _roots:
    sys.meta_path.insert(0, _ExtraRootsFinder(_roots, _wheel_packages))
