"""Which build failures lie outside our code, each judged on the evidence of the failure itself.

An environment that fails to build counts against us unless its own failure shows a cause no
framework could fix on this machine: it is a base class with no app, it needs a host this
machine cannot reach, a requirement that is not on its registry, a heavy requirement the tier
does not install (torch and what always pulls it in, unless NG_COMPAT_HEAVY=1), a tool that is not
installed, or a requirement that no longer imports as published. Everything else stays in scope, so a
bug of ours can never be explained away: the verdict needs the proof in the error line, the
traceback tail or the name lookups that failed (which build_one.py records).
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ABSTRACT = "abstract (no app to build)"
NETWORK = "needs network"
NOT_ON_REGISTRY = "requirement not on its registry"
HEAVY = "heavy requirement not installed"
TOOL = "needs a tool not installed here"
BROKEN_REQUIREMENT = "requirement does not import as published"

# Exception types a failed download or clone surfaces as. A lookup that failed on the way to
# any other error (AttributeError, ValidationError, ...) is not taken as the cause.
NETWORK_ERRORS = frozenset(
    {
        "URLError",
        "HTTPError",
        "ConnectionError",
        "ConnectError",
        "ConnectTimeout",
        "ClientConnectorError",
        "ClientConnectorDNSError",
        "MaxRetryError",
        "NameResolutionError",
        "gaierror",
        "TimeoutError",
        "ReadTimeout",
        "SSLError",
        "OSError",
        "CalledProcessError",
        "LookupError",  # NLTK: a resource its failed download did not fetch
        "RuntimeError",  # environments re-raise a failed download with their own message
        "LocalEntryNotFoundError",
        "HfHubHTTPError",
    }
)

_OUR_PACKAGES = ("nemo_gym", "resources_servers", "responses_api_agents", "responses_api_models")
_URL_HOST = re.compile(r"\b(?:https?|git|ssh)://(?:[^@/\s'\"]+@)?([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_HOST_KW = re.compile(r"host='([A-Za-z0-9.-]+\.[A-Za-z]{2,})'")
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_ABSTRACT = re.compile(r"Can't instantiate abstract class (\w+) with abstract methods? (.+)")
_NPM_INSTALL = re.compile(r"'(?:[^']*/)?npm', 'install'(?:, '-g')?, '([^']+)'")
_TOOL = re.compile(r"\b([\w.-]+) is required\b.*\bnot found on PATH")
_FRAME = re.compile(r'File "([^"]+)", line \d+')
_SCRIPT = re.compile(r"(/[^\s'\"]+\.sh)\b")


@cache
def host_resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except (socket.gaierror, UnicodeError):
        return False
    except OSError:
        return True
    return True


@cache
def npm_package_exists(spec: str) -> bool | None:
    """Whether the npm registry has `name@version` (None: npm itself could not say)."""
    try:
        proc = subprocess.run(["npm", "view", spec, "version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode == 0:
        return bool(proc.stdout.strip())
    return False if "E404" in proc.stderr or " 404 " in proc.stderr else None


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _exception_type(error: str) -> str:
    """`ConnectError` of `httpx.ConnectError: ...` (a module prefix, as pytest prints it, is dropped)."""
    return error.split(":", 1)[0].strip().rsplit(".", 1)[-1]


def _mentioned_hosts(text: str) -> list[str]:
    found: list[str] = []
    for pattern in (_URL_HOST, _HOST_KW):
        for host in pattern.findall(text):
            if host not in found:
                found.append(host)
    return found


_HEAVY_MARK = "(heavy; "
# Every heavy requirement pulls these in; a missing one is the skipped requirement's doing.
_TORCH_FAMILY = ("torch", "torchvision", "torchaudio")


def _heavy_requirement(module: str, skipped: list[str]) -> str | None:
    """The requirement skipped as heavy that provides `module`, if one plainly does."""
    heavy = [line.split(_HEAVY_MARK, 1)[0].strip() for line in skipped if _HEAVY_MARK in line]
    if not heavy:
        return None
    top = module.split(".")[0]
    key = _norm(top)
    for spec in heavy:
        name = _norm(re.split(r"[\s\[<>=!~;@]", spec, maxsplit=1)[0])
        if name and (key in name or name in key):
            return spec
    return heavy[0] if top in _TORCH_FAMILY else None


_PYTHON_TOO_OLD = "need a newer Python than this one"
_UNSATISFIED = re.compile(r"satisfies the requirement ([^\s(]+)")


def _needs_newer_python(module: str, install: dict) -> str | None:
    """The requirement pip could not install because its releases need a newer Python, if it
    plainly provides `module` (the install failed, so nothing of its list is in the venv)."""
    error = str(install.get("error") or "")
    if install.get("status") != "failed" or _PYTHON_TOO_OLD not in error:
        return None
    key = _norm(module.split(".")[0])
    named = _UNSATISFIED.search(error)
    candidates = [named.group(1)] if named else []
    candidates += [str(r) for r in install.get("requirements") or []]
    for spec in candidates:
        name = _norm(re.split(r"[\s\[<>=!~;@]", spec, maxsplit=1)[0])
        if name and (key in name or name in key):
            return spec
    return None


def _missing_module_requirement(module: str, skipped: list[str]) -> str | None:
    """The skipped requirement line (not on PyPI) that provides `module`, if one plainly does."""
    key = _norm(module.split(".")[0])
    for line in skipped:
        if "(not on PyPI)" not in line:
            continue
        spec = line.removesuffix("(not on PyPI)").strip()
        name, _, source = spec.partition("@")
        repo = source.rstrip("/").split("#")[0].split("@")[0].rsplit("/", 1)[-1].removesuffix(".git")
        for candidate in (_norm(name), _norm(repo)):
            if candidate and (key in candidate or candidate in key):
                return spec
    return None


@dataclass(frozen=True)
class _Failure:
    """One failure as the rules read it."""

    error: str
    detail: dict
    install: dict
    env_dir: Path
    resolves: Callable[[str], bool]
    npm_has: Callable[[str], bool | None]

    @property
    def entrypoint(self) -> str:
        return str(self.detail.get("entrypoint") or "app.py")

    @property
    def kind_of_error(self) -> str:
        return _exception_type(self.error)

    @property
    def tail(self) -> str:
        return "\n".join(self.detail.get("traceback_tail") or [])

    @property
    def missing(self) -> re.Match[str] | None:
        return _NO_MODULE.search(self.error)


Verdict = tuple[str, str] | None


def _abstract(f: _Failure) -> Verdict:
    kind, name = f.env_dir.parent.name, f.env_dir.name
    module = f"{kind}.{name}.{Path(f.entrypoint).with_suffix('').as_posix().replace('/', '.')}"
    if f"No module named '{module}'" in f.error and not (f.env_dir / f.entrypoint).exists():
        return ABSTRACT, f"has no {f.entrypoint}: a base that other environments build on"
    if f.error.startswith("LookupError: ") and "defines no subclass of" in f.error:
        if f.detail.get("server_like_classes") == []:
            return ABSTRACT, f"{f.entrypoint} defines no server class: a library other environments import"
    abstract = _ABSTRACT.search(f.error)
    if abstract and f.kind_of_error == "TypeError":
        return ABSTRACT, f"{abstract.group(1)} leaves abstract methods to subclasses: {abstract.group(2)}"
    return None


def _missing_requirement(f: _Failure) -> Verdict:
    missing = f.missing
    if not missing or missing.group(1).startswith(_OUR_PACKAGES):
        return None
    module, skipped = missing.group(1), f.install.get("skipped") or []
    spec = _missing_module_requirement(module, skipped)
    if spec:
        return NOT_ON_REGISTRY, f"'{module}' comes from {spec}, which is not on PyPI"
    newer = _needs_newer_python(module, f.install)
    if newer:
        return NOT_ON_REGISTRY, f"'{module}' comes from {newer}, which has no release for this Python"
    heavy = _heavy_requirement(module, skipped)
    if heavy:
        return HEAVY, f"'{module}' comes with {heavy}, skipped as heavy (NG_COMPAT_HEAVY=1 installs it)"
    return None


def _npm_or_tool(f: _Failure) -> Verdict:
    npm = _NPM_INSTALL.search(f.error)
    if npm and f.kind_of_error == "CalledProcessError" and f.npm_has(npm.group(1)) is False:
        return NOT_ON_REGISTRY, f"npm has no {npm.group(1)}"
    tool = _TOOL.search(f.error)
    if tool:
        return TOOL, f"{tool.group(1)} is not on PATH (it is not a dependency of NeMo Gym either)"
    return None


def _broken_requirement(f: _Failure) -> Verdict:
    if f.kind_of_error != "ImportError" or f.missing:
        return None
    frames = _FRAME.findall(f.tail)
    if frames and "site-packages" in frames[-1] and f"/{_OUR_PACKAGES[0]}/" not in frames[-1]:
        package = frames[-1].split("site-packages/", 1)[1].split("/", 1)[0]
        return BROKEN_REQUIREMENT, f"{package} raises on import: {f.error.split(':', 1)[1].strip()[:160]}"
    return None


def _failed_setup_script(f: _Failure) -> Verdict:
    """A setup script the server runs failed: what it downloads from is the evidence."""
    text = f"{f.error}\n{f.tail}"
    script = _SCRIPT.search(text) if ("Command failed" in text or "assertion_error" in text) else None
    if not (script and Path(script.group(1)).is_file()):
        return None
    source = Path(script.group(1)).read_text(errors="replace")
    hosts = [h for h in _mentioned_hosts(source) if not f.resolves(h)]
    if hosts:
        return (
            NETWORK,
            f"{Path(script.group(1)).name} downloads from {', '.join(hosts[:3])} (does not resolve here)",
        )
    return None


def _network(f: _Failure) -> Verdict:
    if f.kind_of_error == "FileNotFoundError" and "on the Hugging Face Hub" in f.error:
        # `datasets` looked for a dataset locally, then on the Hub: the lookup that failed is the cause.
        hub = [h for h in f.detail.get("unresolved_hosts") or [] if h.endswith("huggingface.co")]
        if hub:
            return NETWORK, f"{hub[0]} (does not resolve here)"
    if f.kind_of_error in NETWORK_ERRORS:
        unresolved = list(f.detail.get("unresolved_hosts") or [])
        named = [h for h in _mentioned_hosts(f"{f.error}\n{f.tail}") if not f.resolves(h)]
        hosts = [h for h in named if h in unresolved] or named or unresolved
        if hosts:
            return NETWORK, ", ".join(hosts[:3]) + " (does not resolve here)"
    return None


# In order: the first rule with a verdict decides.
_RULES: tuple[Callable[[_Failure], Verdict], ...] = (
    _abstract,
    _missing_requirement,
    _npm_or_tool,
    _broken_requirement,
    _failed_setup_script,
    _network,
)


def classify(
    error: str,
    detail: dict,
    install: dict,
    env_dir: Path,
    *,
    resolves: Callable[[str], bool] = host_resolves,
    npm_has: Callable[[str], bool | None] = npm_package_exists,
) -> tuple[str, str] | None:
    """(class, reason) when the failure proves a cause outside our code; None keeps it in scope."""
    failure = _Failure(error, detail, install, env_dir, resolves, npm_has)
    for rule in _RULES:
        verdict = rule(failure)
        if verdict:
            return verdict
    return None
