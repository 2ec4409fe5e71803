"""Sandboxes: run commands and move files in a disposable environment, whatever runs it.

`AsyncSandbox` (and its blocking twin `Sandbox`) is what servers use; a provider does the work:
`local` (host processes, no isolation), `isolated` (Linux namespaces through bubblewrap: no
host files, no network), `docker` (a container per sandbox), and the names of NeMo Gym 0.7.0's
cloud and cluster providers, which fail at start naming what they need. See docs/sandbox.md.
"""

from nemo_gym.sandbox import providers as _providers
from nemo_gym.sandbox.adapters.docker_compose import AsyncSandboxCompose
from nemo_gym.sandbox.api import AsyncSandbox, Sandbox, SandboxPty
from nemo_gym.sandbox.config import resolve_provider_config, resolve_provider_metadata
from nemo_gym.sandbox.utils import rewrite_image

# The provider contract and registry are public here under the names `providers` exports, so a name
# added there needs no second list here.
globals().update({name: getattr(_providers, name) for name in _providers.__all__})

__all__ = [
    "AsyncSandbox",
    "AsyncSandboxCompose",
    "Sandbox",
    "SandboxPty",
    "resolve_provider_config",
    "resolve_provider_metadata",
    "rewrite_image",
    *_providers.__all__,
]
