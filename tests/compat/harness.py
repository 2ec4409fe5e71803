"""The compatibility tier's machinery: fetch NeMo Gym's wheel, take every server and bundle it ships,
prepare a venv for them, and build / run / test each one in its own subprocess.

Nothing from the wheel is copied into our tree: it is downloaded into `.compat_cache/` (ignored
by git) and imported from there. Run it all with `make test-compat`, or pieces by hand:

    .venv/bin/python -m tests.compat.harness prepare                 # wheel, venv, requirements
    .compat_cache/venv/bin/python -m tests.compat.harness build [kind/name ...]      # stage (a)
    .compat_cache/venv/bin/python -m tests.compat.harness bundles [environments/name ...]  # stage (a')
    .compat_cache/venv/bin/python -m tests.compat.harness e2e [name ...]              # stage (b)
    .compat_cache/venv/bin/python -m tests.compat.harness own_tests [kind/name ...]  # stage (c)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nemo_gym.config import PROJECT_ROOT
from tests.compat import bundles, e2e, scope

WHEEL_VERSION = os.environ.get("NG_COMPAT_VERSION", "0.7.0")
CACHE = Path(os.environ.get("NG_COMPAT_CACHE", PROJECT_ROOT / ".compat_cache"))
WHEEL_ROOT = CACHE / "wheel"
VENV = CACHE / "venv"
REPORT = CACHE / "report.json"
HERE = Path(__file__).resolve().parent
JOBS = int(os.environ.get("NG_COMPAT_JOBS", "2"))
# Issue 21's floors, below which a stage (and `make test-compat`) fails: shares of the servers
# (or bundles) in scope, and a number of environments run end to end.
FLOORS = {
    "build": float(os.environ.get("NG_COMPAT_THRESHOLD", "0.9")),
    "bundles": float(os.environ.get("NG_COMPAT_BUNDLES_THRESHOLD", "0.9")),
    "own_tests": float(os.environ.get("NG_COMPAT_TESTS_THRESHOLD", "0.8")),
}
E2E_FLOOR = int(os.environ.get("NG_COMPAT_E2E_MIN", "25"))
# Every server NeMo Gym ships is counted: the denominator is all of these folders.
SERVER_KINDS = ("resources_servers", "responses_api_agents", "environment_servers")
KIND_LABELS = {
    "resources_servers": "resources servers",
    "responses_api_agents": "agents",
    "environment_servers": "environment servers",
}
# Requirements that are too heavy for this tier unless NG_COMPAT_HEAVY=1: torch and the
# packages that always pull it in.
HEAVY = (
    "torch",
    "torchvision",
    "torchaudio",
    "unbabel-comet",
    "bert-score",
    "swebench",
    "nemo-fabric",
    "accelerate",
    "lpips",
    "timm",
    "sentence-transformers",
    "torchmetrics",
    "openai-clip",
)

_FROM_IMPORT = re.compile(r"^[ \t]*from[ \t]+nemo_gym(?:\.([\w.]+))?[ \t]+import\b", re.M)
_PLAIN_IMPORT = re.compile(r"^[ \t]*import[ \t]+nemo_gym(?:\.([\w.]+))?", re.M)


def log(msg: str) -> None:
    print(f"[compat {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the reference wheel


def ensure_wheel() -> Path:
    """Download nemo-gym==WHEEL_VERSION once (no deps, binary only) and unzip it into CACHE/wheel."""
    marker = WHEEL_ROOT / ".unzipped"
    if marker.exists() and marker.read_text() == WHEEL_VERSION:
        return WHEEL_ROOT
    download = CACHE / "download"
    download.mkdir(parents=True, exist_ok=True)
    wheels = sorted(download.glob(f"nemo_gym-{WHEEL_VERSION}-*.whl"))
    if not wheels:
        log(f"downloading nemo-gym=={WHEEL_VERSION}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.13.14",
                f"nemo-gym=={WHEEL_VERSION}",
                "-d",
                str(download),
            ],
            check=True,
        )
        wheels = sorted(download.glob(f"nemo_gym-{WHEEL_VERSION}-*.whl"))
    shutil.rmtree(WHEEL_ROOT, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extractall(WHEEL_ROOT)
    marker.write_text(WHEEL_VERSION)
    return WHEEL_ROOT


def _nemo_gym_modules(source: str) -> set[str]:
    """Top-level nemo_gym submodules a source file imports ("__init__" for the package itself)."""
    found = set()
    for pattern in (_FROM_IMPORT, _PLAIN_IMPORT):
        for match in pattern.finditer(source):
            found.add((match.group(1) or "__init__").split(".")[0])
    return found


def _is_test_path(rel: Path) -> bool:
    return "tests" in rel.parts or rel.name.startswith("test_") or rel.name == "conftest.py"


def core_modules_used(env_dir: Path, tests: bool = False) -> set[str]:
    """nemo_gym modules imported by an environment's code (or, with tests=True, by its tests)."""
    used: set[str] = set()
    for path in env_dir.rglob("*.py"):
        if _is_test_path(path.relative_to(env_dir)) != tests:
            continue
        used |= _nemo_gym_modules(path.read_text(errors="replace"))
    return used


def servers(root: Path) -> list[str]:
    """`kind/name` of every server folder the wheel ships (the tier's denominator)."""
    return [
        f"{kind}/{path.name}"
        for kind in SERVER_KINDS
        if (root / kind).is_dir()
        for path in sorted((root / kind).iterdir())
        if path.is_dir() and not path.name.startswith(("_", "."))
    ]


def ours_too(env: str) -> bool:
    """Whether this checkout ships a server of the same `kind/name` (which imports would find first)."""
    return (PROJECT_ROOT / env / "app.py").is_file()


# ---------------------------------------------------------------------------- the compat venv


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """A venv that sees our .venv's packages (ours first-installed, env requirements on top)."""
    python = venv_python()
    if python.exists() and Path(sys.prefix).resolve() == VENV.resolve():
        # Already prepared and running inside it: only our modules in it are refreshed (they may have changed).
        _install_helpers(Path(sysconfig.get_paths()["purelib"]))
        return python
    if not python.exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    ours = sysconfig.get_paths()["purelib"]
    (site / "zz_nemo_gym_main_venv.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    _install_helpers(site)
    (site / "zz_ng_compat_paths.pth").write_text("import _ng_compat_paths\n")
    return python


# The own-tests stage's pytest plugin, under a name no environment's `tests` package can shadow.
LOOKUPS_PLUGIN = "_ng_compat_lookups"


def _install_helpers(site: Path) -> None:
    shutil.copy(HERE / "compat_paths.py", site / "_ng_compat_paths.py")
    shutil.copy(HERE / "lookups_plugin.py", site / f"{LOOKUPS_PLUGIN}.py")


def _constraints() -> Path:
    """Pin our own runtime dependencies so an environment's requirements cannot move them."""
    path = CACHE / "constraints.txt"
    names = ["fastapi", "starlette", "pydantic", "pydantic-core", "openai", "omegaconf", "hydra-core"]
    names += ["aiohttp", "httpx", "uvicorn", "orjson", "pyyaml", "uvloop", "httptools"]
    from importlib.metadata import PackageNotFoundError, version

    lines = []
    for name in names:
        try:
            lines.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    path.write_text("\n".join(lines) + "\n")
    return path


def declared_requirements(env_dir: Path) -> list[str]:
    """An environment's requirement lines: its requirements.txt, else its pyproject.toml's
    `[project] dependencies` (a few environments declare them only there)."""
    path = env_dir / "requirements.txt"
    if path.exists():
        return path.read_text().splitlines()
    pyproject = env_dir / "pyproject.toml"
    if not pyproject.exists():
        return []
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text())
    except tomllib.TOMLDecodeError:
        return []
    # uv may take a dependency from elsewhere than PyPI (`[tool.uv.sources]`): a git source
    # is written as the git requirement it is, a path source as the path.
    uv = data.get("tool", {}).get("uv", {})
    sources = uv.get("sources") or {}
    lines = []
    for dep in data.get("project", {}).get("dependencies", []):
        name = re.split(r"[\s\[<>=!~;@]", dep, maxsplit=1)[0]
        source = next((v for k, v in sources.items() if _norm_name(k) == _norm_name(name)), None)
        if isinstance(source, dict) and source.get("git"):
            dep = f"{name} @ git+{source['git']}"
        elif isinstance(source, dict) and source.get("url"):
            dep = f"{name} @ {source['url']}"
        elif isinstance(source, dict) and source.get("path"):
            dep = str(source["path"])
        lines.append(dep)
    return lines


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _local_requirement(line: str, env_dir: Path) -> tuple[str | None, str]:
    """(what pip installs, why not) for a requirement naming a path, relative to the env's folder."""
    spec = line.removeprefix("-e").strip()
    match = re.match(r"^(?P<path>[^\[\s]+)(?P<extras>\[[^\]]*\])?$", spec)
    if not match:
        return None, "unparsed local path"
    target = (env_dir / match.group("path")).resolve()
    if (target / "nemo_gym").is_dir() or target == WHEEL_ROOT.resolve():
        return None, "the framework itself"
    if not ((target / "pyproject.toml").exists() or (target / "setup.py").exists()):
        return None, "local path with no package"
    return f"{target}{match.group('extras') or ''}", ""


def requirement_lines(env_dir: Path) -> tuple[list[str], list[str]]:
    """(installable from PyPI or the environment's own folder, skipped with a reason)."""
    keep: list[str] = []
    skipped: list[str] = []
    heavy_ok = os.environ.get("NG_COMPAT_HEAVY") == "1"
    for raw in declared_requirements(env_dir):
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[\s\[<>=!~;@]", line, maxsplit=1)[0].lower().replace("_", "-")
        spec_name = re.split(r"[\s\[<>=!~;@]", line.removeprefix("-e").strip(), maxsplit=1)[0]
        if _norm_name(spec_name) == "nemo-gym":
            skipped.append(f"{line} (the framework itself)")
            for requirement in framework_dependencies_used(env_dir):
                if requirement not in keep:
                    keep.append(requirement)
        elif line.startswith(("-e", ".")):
            local, why = _local_requirement(line, env_dir)
            if local:
                keep.append(local)
            else:
                skipped.append(f"{line} ({why})")
        elif line.startswith(("-r", "-c", "--")):
            skipped.append(f"{line} (pip option)")
        elif "git+" in line or "://" in line:
            skipped.append(f"{line} (not on PyPI)")
        elif name in HEAVY and not heavy_ok:
            skipped.append(f"{line} (heavy; NG_COMPAT_HEAVY=1 installs it)")
        else:
            keep.append(line)
    return keep, skipped


# Import names of NeMo Gym's own dependencies that differ from their distribution's name.
_IMPORT_ALIASES = {"pyyaml": "yaml", "gitpython": "git", "pyjwt": "jwt", "python-multipart": "multipart"}
# Modules of other packages that need one of NeMo Gym's dependencies (starlette's sessions need
# itsdangerous, which NeMo Gym installs for its own session middleware).
_NEEDS = {"starlette.middleware.sessions": "itsdangerous"}
_IMPORT = re.compile(r"^[ \t]*(?:from|import)[ \t]+([A-Za-z_][\w.]*)", re.M)


def framework_dependencies_used(env_dir: Path) -> list[str]:
    """NeMo Gym's own runtime dependencies that the environment's code or tests import.

    `nemo-gym` in an environment's requirements installs those too, and environments rely on it
    (swe_agents imports pydot, which only the framework declares); ours are not the same list, so
    the ones it uses are installed for it."""
    metadata = next(WHEEL_ROOT.glob("nemo_gym-*.dist-info/METADATA"), None)
    if metadata is None:
        return []
    by_import: dict[str, str] = {}
    for line in metadata.read_text().splitlines():
        if line.startswith("Requires-Dist: ") and ";" not in line:
            requirement = line.removeprefix("Requires-Dist: ").strip()
            name = _norm_name(re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0])
            by_import[_IMPORT_ALIASES.get(name, name.replace("-", "_"))] = requirement
    used: set[str] = set()
    for path in env_dir.rglob("*.py"):  # its tests too: NeMo Gym's venv has them for the tests
        for match in re.finditer(_IMPORT, path.read_text(errors="replace")):
            used.add(match.group(1).split(".")[0])
            used.update(needed for module, needed in _NEEDS.items() if match.group(1).startswith(module))
    # What our own environment already provides stands in for it (we pin our own versions).
    return [by_import[name] for name in sorted(used) if name in by_import and not _importable(name)]


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Install:
    status: str  # none | ok | cached | overlay | failed
    requirements: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str = ""


def install_requirements(env_dir: Path, timeout: float = 600) -> Install:
    keep, skipped = requirement_lines(env_dir)
    if not keep:
        return Install("none", keep, skipped)
    digest = hashlib.sha256("\n".join(keep).encode()).hexdigest()[:16]
    stamp = CACHE / "installed" / f"{env_dir.parent.name}.{env_dir.name}.{digest}"
    if stamp.exists():
        if stamp.read_text() == OWN_OVERLAY:
            return Install("overlay", keep, skipped, "conflicts with our pins, installed apart (cached)")
        return Install("cached", keep, skipped)
    failed_stamp = Path(f"{stamp}.failed")
    if failed_stamp.exists() and os.environ.get("NG_COMPAT_RETRY") != "1":
        return Install(
            "failed", keep, skipped, failed_stamp.read_text() + " (cached; NG_COMPAT_RETRY=1 retries)"
        )
    command = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    command += ["-c", str(_constraints()), *keep]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Install("failed", keep, skipped, f"pip install timed out after {timeout:.0f}s")
    if result.returncode != 0:
        error = _pip_error(result.stderr)
        if _conflicts_with_our_pins(result.stderr) and _own_overlay(env_dir, keep, timeout):
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(OWN_OVERLAY)
            return Install("overlay", keep, skipped, f"conflicts with our pins, installed apart: {error}")
        failed_stamp.parent.mkdir(parents=True, exist_ok=True)
        failed_stamp.write_text(error)
        return Install("failed", keep, skipped, error)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    return Install("ok", keep, skipped)


# An environment whose requirements conflict with the versions we pin gets them in a directory of
# its own, first on its PYTHONPATH: NeMo Gym gives every server its own venv, and this is that venv.
OWN_OVERLAY = "own"


PYTHON_TOO_OLD = "(its releases on the registry need a newer Python than this one)"


def _pip_error(stderr: str) -> str:
    """pip's telling error line; when releases were skipped for their Python version, it says so."""
    lines = [ln for ln in stderr.splitlines() if ln.strip().startswith("ERROR")] or [
        ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")
    ]
    telling = [ln for ln in lines if "Ignored the following versions" not in ln] or lines
    error = (telling[0] if telling else "pip failed").strip()[:300]
    if "require a different python version" in stderr:
        error = f"{error} {PYTHON_TOO_OLD}"
    return error


def _conflicts_with_our_pins(stderr: str) -> bool:
    """pip refused because of a version we pin (not a missing package or a Python too old)."""
    if "require a different python version" in stderr or "from versions: none" in stderr:
        return False
    pinned = {line.split("==")[0] for line in _constraints().read_text().split()}
    mentioned = {
        m.lower().replace("_", "-") for m in re.findall(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?[<>=!~]", stderr)
    }
    return "conflicting dependencies" in stderr or bool(pinned & mentioned)


def _own_overlay(env_dir: Path, keep: list[str], timeout: float) -> bool:
    target = overlay_dir(f"{env_dir.parent.name}/{env_dir.name}")
    shutil.rmtree(target, ignore_errors=True)
    command = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    command += ["--target", str(target), *keep]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    if result.returncode != 0:
        log(f"own overlay for {env_dir.name} failed: {_pip_error(result.stderr)}")
        shutil.rmtree(target, ignore_errors=True)
        return False
    (target / ".ng_overlay").write_text(OWN_OVERLAY)
    return True


OVERLAYS = CACHE / "overlays"


def overlay_dir(env: str) -> Path:
    return OVERLAYS / env.replace("/", ".")


def _import_names_by_distribution() -> dict[str, set[str]]:
    """Top-level import names of every installed distribution (normalized name → names)."""
    from importlib.metadata import distributions

    names: dict[str, set[str]] = {}
    for dist in distributions():
        key = _norm_name(dist.metadata["Name"] or "")
        top = (dist.read_text("top_level.txt") or "").split()
        if not top:
            for file in dist.files or ():
                first = file.parts[0] if file.parts else ""
                if (
                    first
                    and not first.endswith((".dist-info", ".egg-info", ".pth"))
                    and first not in ("..", "bin")
                ):
                    top.append(first.removesuffix(".py"))
        names.setdefault(key, set()).update(t for t in top if t and t != "__pycache__")
    return names


def _is_namespace_package(name: str) -> bool:
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return (
        spec is not None
        and spec.origin in (None, "namespace")
        and spec.submodule_search_locations is not None
    )


def clashing_distributions() -> list[str]:
    """Distributions of this interpreter that install an import name another one installs too."""
    owners: dict[str, set[str]] = {}
    for dist, tops in _import_names_by_distribution().items():
        for top in tops:
            owners.setdefault(top, set()).add(dist)
    return sorted(
        dist
        for top, dists in owners.items()
        if len(dists) > 1 and not _is_namespace_package(top)  # namespace portions do merge
        for dist in dists
    )


def _clashing_distributions() -> list[str]:
    """`clashing_distributions` of the compat venv (prepare runs outside it)."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return clashing_distributions()
    code = (
        "import json; from tests.compat import harness; print(json.dumps(harness.clashing_distributions()))"
    )
    output = subprocess.run(
        [str(venv_python()), "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def install_overlays(envs: list[str]) -> dict[str, list[str]]:
    """One shared venv cannot hold two distributions that install the same import name
    (NeMo Gym gives each server its own venv): an environment that requires one of them gets
    it again, alone, in an overlay directory put first on its PYTHONPATH."""
    clashing = set(_clashing_distributions())
    made: dict[str, list[str]] = {}
    for env in envs:
        keep, _ = requirement_lines(WHEEL_ROOT / env)
        lines = [
            line for line in keep if _norm_name(re.split(r"[\s\[<>=!~;@]", line, maxsplit=1)[0]) in clashing
        ]
        target = overlay_dir(env)
        stamp = target / ".ng_overlay"
        if not lines or (stamp.exists() and stamp.read_text() == OWN_OVERLAY):
            continue  # nothing clashes, or all its requirements are in a directory of its own already
        made[env] = lines
        if stamp.exists() and stamp.read_text() == "\n".join(lines):
            continue
        shutil.rmtree(target, ignore_errors=True)
        command = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        command += ["--no-deps", "--target", str(target), *lines]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode == 0:
            stamp.write_text("\n".join(lines))
            log(f"overlay {env}: {', '.join(lines)}")
        else:
            log(f"overlay {env} failed: {first_line(result.stderr)}")
    return made


def env_vars(env: str | None = None) -> dict[str, str]:
    """What a compat subprocess sees: the environment's overlay (if any), our project, then the
    wheel's environments."""
    variables = dict(os.environ)
    variables["NG_COMPAT_EXTRA_ROOTS"] = str(WHEEL_ROOT)
    # The wheel's root last: its top-level packages we do not have (`benchmarks`) import from it,
    # as they do from a NeMo Gym checkout's root.
    paths = [str(PROJECT_ROOT), str(WHEEL_ROOT)]
    if env is not None and (overlay_dir(env) / ".ng_overlay").exists():
        paths.insert(0, str(overlay_dir(env)))
    variables["PYTHONPATH"] = os.pathsep.join(paths)
    # Where we ship a server of the same name (simple_agent, legacy_agent, ...), its build and own
    # tests import the wheel's copy: that copy is what "runs unchanged" is about.
    if env is not None and ours_too(env):
        variables["NG_COMPAT_WHEEL_PACKAGES"] = env.replace("/", ".")
    else:
        variables.pop("NG_COMPAT_WHEEL_PACKAGES", None)
    # Files environments name relative to the checkout (prompts, data) are found in the wheel, as a
    # user's NeMo Gym checkout would be named in NEMO_GYM_EXTRA_ROOTS.
    variables["NEMO_GYM_EXTRA_ROOTS"] = str(WHEEL_ROOT)
    variables["NEMO_GYM_ENV_YAML"] = "none"
    variables["PYTHONUNBUFFERED"] = "1"
    # Ray's default temp dir remembers the last cluster of the machine; a test's plain
    # `ray.init(num_cpus=1)` would try to join a stale one. A short path: Ray's sockets live there.
    variables.setdefault("RAY_TMPDIR", "/tmp/ng_compat_ray")
    variables.pop("VIRTUAL_ENV", None)
    return variables


# ---------------------------------------------------------------------------- stage (a): build apps


@dataclass
class Result:
    env: str
    status: str  # ok | install_failed+ok | <stage>_error | timeout
    stage: str = ""
    error: str = ""
    detail: dict = field(default_factory=dict)
    install: dict = field(default_factory=dict)
    seconds: float = 0.0
    # "" while the failure counts against us; "<class>: <reason>" when scope.classify proved
    # the cause lies outside our code.
    out_of_scope: str = ""


BUILD_TIMEOUT = float(os.environ.get("NG_COMPAT_BUILD_TIMEOUT", "90"))


def sub_implementations(env: str) -> list[str]:
    """`kind/name/sub` of the implementations a folder without an app.py of its own holds
    (conversational_tool_use: one per generation stage); empty for an ordinary server."""
    folder = WHEEL_ROOT / env
    if (folder / "app.py").is_file():
        return []
    return [f"{env}/{sub.name}" for sub in sorted(folder.iterdir()) if (sub / "app.py").is_file()]


def build_one(env: str, timeout: float = BUILD_TIMEOUT) -> Result:
    """Build one environment in its own process, bounded: build_one.py reports where it is stuck
    a little before `timeout`, and the process is killed at `timeout` regardless. A folder of
    several implementations builds when every one of them does."""
    subs = sub_implementations(env)
    if subs:
        results = [_build_process(sub, timeout) for sub in subs]
        failed = next((r for r in results if r.status != "ok"), None)
        detail = {"implementations": {r.env: r.status for r in results}}
        if failed is None:
            return Result(env, "ok", "done", "", detail, seconds=sum(r.seconds for r in results))
        return Result(
            env,
            failed.status,
            failed.stage,
            f"{failed.env}: {failed.error}"[:300],
            {**failed.detail, **detail},
        )
    return _build_process(env, timeout)


def _build_process(env: str, timeout: float) -> Result:
    kind, name = env.split("/", 1)
    started = time.monotonic()
    command = [str(venv_python()), str(HERE / "build_one.py"), kind, name, str(WHEEL_ROOT)]
    variables = env_vars("/".join(env.split("/")[:2]))
    variables["NG_COMPAT_BUILD_WATCHDOG"] = str(max(timeout - 10, timeout * 0.8))
    try:
        proc = subprocess.run(
            command,
            cwd=WHEEL_ROOT / kind / name,
            env=variables,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        tail = [ln for ln in stderr.splitlines() if ln.strip()]
        last = f" (last stderr line: {tail[-1].strip()[:200]})" if tail else ""
        return Result(env, "timeout", "build", f"killed after {timeout:.0f}s{last}", seconds=timeout)
    seconds = round(time.monotonic() - started, 2)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("NG_COMPAT_RESULT "):
            data = json.loads(line.removeprefix("NG_COMPAT_RESULT "))
            return Result(
                env, data["status"], data["stage"], data["error"], data.get("detail", {}), seconds=seconds
            )
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return Result(
        env, "crash", "process", f"exit {proc.returncode}: {tail[-1] if tail else ''}"[:300], seconds=seconds
    )


def run_build_stage(envs: list[str] | None = None) -> list[Result]:
    """Build every server's app (requirements come from `prepare`)."""
    root = ensure_wheel()
    subset = bool(envs)
    envs = envs or servers(root)
    ensure_venv()
    report = CACHE / "install_report.json"
    installs = json.loads(report.read_text()) if report.exists() else {}
    log(f"building {len(envs)} environment apps, {JOBS} at a time")
    with ThreadPoolExecutor(JOBS) as pool:
        results = list(pool.map(build_one, envs))
    for result in results:
        result.install = installs.get(result.env, {})
        if result.status != "ok":
            verdict = scope.classify(result.error, result.detail, result.install, root / result.env)
            result.out_of_scope = f"{verdict[0]}: {verdict[1]}" if verdict else ""
    write_report("build", results, merge=subset)
    return results


def run_bundles_stage(names: list[str] | None = None) -> list[Result]:
    """Load every `environments/` bundle config as ng_run would (stage a')."""
    root = ensure_wheel()
    configs = bundles.bundle_configs(root)
    results = []
    for name, config in configs.items():
        if names and name not in names:
            continue
        name, status, error, detail, seconds = bundles.timed(root, name, config)
        results.append(Result(name, status, "bundle", error, detail, seconds=seconds))
    write_report("bundles", results, merge=bool(names))
    return results


def in_scope_rate(results: list[Result]) -> tuple[int, int]:
    """(built, in scope): the bar is computed over environments whose failures are ours to fix."""
    counted = [r for r in results if not r.out_of_scope]
    return sum(r.status == "ok" for r in counted), len(counted)


# ---------------------------------------------------------------------------- stage (b): end to end

# The cases, and how one runs and is judged: tests/compat/e2e.py.


# ---------------------------------------------------------------------------- stage (c): own tests


def servers_with_tests(root: Path) -> list[str]:
    """Servers that ship their own tests (tests/test_*.py)."""
    return [env for env in servers(root) if any((root / env / "tests").glob("test_*.py"))]


_NODE_LOOKUP = re.compile(r"getaddrinfo ENOTFOUND ([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_EXCEPTION_LINE = re.compile(r"^[\w.]+(?:Error|Exception|Exit)\b")
OWN_TESTS_TIMEOUT = float(os.environ.get("NG_COMPAT_TESTS_TIMEOUT", "180"))


def own_tests_one(env: str, timeout: float = OWN_TESTS_TIMEOUT) -> Result:
    env_dir = WHEEL_ROOT / env
    ini = CACHE / "own_tests_pytest.ini"
    ini.write_text("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    command = [str(venv_python()), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini)]
    command += ["-p", LOOKUPS_PLUGIN]
    # No -x: the tally then counts every test, and the first failure is still the one reported.
    command += ["--rootdir", str(env_dir), "--no-header", "tests"]
    lookups = CACHE / "lookups" / f"{env.replace('/', '.')}.txt"
    lookups.parent.mkdir(parents=True, exist_ok=True)
    lookups.unlink(missing_ok=True)
    variables = {**env_vars(env), "NG_COMPAT_LOOKUPS": str(lookups)}
    started = time.monotonic()
    try:
        proc = subprocess.run(
            command, cwd=env_dir, env=variables, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return Result(env, "timeout", "tests", f"tests still running after {timeout:.0f}s", seconds=timeout)
    seconds = round(time.monotonic() - started, 2)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    tally = lines[-1] if lines else ""
    if proc.returncode == 0:
        return Result(env, "ok", "tests", "", {"tally": tally}, seconds=seconds)
    # The first "E   " line is the first failure's error; fall back to the tally line. A conftest
    # that fails to load, or a plugin that fails while pytest configures itself, reports on
    # stderr, the latter as pytest's INTERNALERROR traceback (its exception is the last line).
    both = lines + [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln[1:].strip() for ln in both if ln.startswith("E ")]
    internal = [ln.removeprefix("INTERNALERROR>").strip() for ln in both if ln.startswith("INTERNALERROR>")]
    errors += [ln for ln in internal if _EXCEPTION_LINE.match(ln)][-1:]
    short = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    unresolved = set(lookups.read_text().split()) if lookups.exists() else set()
    # Lookups that fail in a child process (node's `getaddrinfo ENOTFOUND host`) are printed.
    unresolved = sorted(unresolved | set(_NODE_LOOKUP.findall(proc.stdout + proc.stderr)))
    detail = {
        "tally": tally,
        "first_failed": short[:3],
        "error_lines": errors[:30],
        "unresolved_hosts": unresolved,
    }
    return Result(
        env,
        "tests_failed",
        "tests",
        (errors[0] if errors else short[0] if short else tally)[:300],
        detail,
        seconds=seconds,
    )


def _build_verdicts() -> dict[str, str]:
    """`env → out-of-scope verdict` of the last build stage (empty when it has not run)."""
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    return {
        r["env"]: r["out_of_scope"]
        for r in report.get("build", {}).get("results", [])
        if r.get("out_of_scope")
    }


def classify_own_tests(result: Result, install: dict, root: Path) -> str:
    """The scope verdict of a failed own-tests run: the first of its error lines whose own
    evidence proves a cause outside our code (the same rules as the build stage)."""
    for line in [result.error, *result.detail.get("error_lines", [])]:
        verdict = scope.classify(line, result.detail, install, root / result.env)
        if verdict:
            return f"{verdict[0]}: {verdict[1]}"
    return ""


def run_own_tests_stage(envs: list[str] | None = None) -> list[Result]:
    root = ensure_wheel()
    subset = bool(envs)
    envs = envs or servers_with_tests(root)
    log(f"running {len(envs)} environments' own tests, {JOBS} at a time")
    with ThreadPoolExecutor(JOBS) as pool:
        results = list(pool.map(own_tests_one, envs))
    report = CACHE / "install_report.json"
    installs = json.loads(report.read_text()) if report.exists() else {}
    builds = _build_verdicts()
    for result in results:
        result.install = installs.get(result.env, {})
        if result.status != "ok":
            # A server whose build failed for a cause outside our code fails its tests for it too.
            result.out_of_scope = classify_own_tests(result, result.install, root) or builds.get(
                result.env, ""
            )
    write_report("own_tests", results, merge=subset)
    return results


def run_e2e_stage(ids: list[str] | None = None) -> list[Result]:
    import tempfile

    ensure_wheel()
    os.environ["NG_COMPAT_EXTRA_ROOTS"] = str(WHEEL_ROOT)
    results = []
    for case in e2e.CASES:
        if ids and case.id not in ids:
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                record = e2e.verdict(case, e2e.run(WHEEL_ROOT, CACHE, case, Path(tmp)))
            except Exception as exc:  # ng_run did not start, a timeout, …
                record = {"env": case.id, "proves": list(case.proves), "status": "failed"}
                record["error"] = first_line(f"{type(exc).__name__}: {exc}")
                record["detail"] = str(exc)[-4000:]
                record["ng_run_log"] = str(CACHE / "e2e" / f"{case.id}.ng_run.log")
        append_e2e_record(record)
        log(f"e2e {case.id}: {record['status']} {record.get('error', '')}")
        results.append(
            Result(
                case.id,
                record["status"],
                "e2e",
                record.get("error", ""),
                seconds=round(time.monotonic() - started, 1),
            )
        )
    return results


def prepare() -> None:
    """Wheel, venv and every in-scope environment's requirements (cached); install report saved."""
    root = ensure_wheel()
    ensure_venv()
    installs = {}
    for env in servers(root):
        inst = install_requirements(root / env)
        if inst.status in ("ok", "failed"):
            log(f"install {env}: {inst.status} {inst.error}")
        installs[env] = asdict(inst)
    for env, lines in install_overlays(servers(root)).items():
        installs[env]["overlay"] = lines
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "install_report.json").write_text(json.dumps(installs, indent=1))


# ---------------------------------------------------------------------------- reporting


def first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def write_report(stage: str, results: list[Result], merge: bool = False) -> dict:
    """Save a stage's results; with `merge` (a re-run of some servers) they replace those servers'
    earlier entries and the others stay."""
    CACHE.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    entries = [asdict(r) for r in results]
    if merge:
        rerun = {r.env for r in results}
        kept = [e for e in report.get(stage, {}).get("results", []) if e["env"] not in rerun]
        entries = sorted(kept + entries, key=lambda e: _order(e["env"]))
    report[stage] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wheel_version": WHEEL_VERSION,
        "passed": sum(e["status"] == "ok" for e in entries),
        "total": len(entries),
        "results": entries,
    }
    REPORT.write_text(json.dumps(report, indent=1))
    return report[stage]


def _order(env: str) -> tuple[int, str]:
    kind = env.split("/")[0]
    return (SERVER_KINDS.index(kind) if kind in SERVER_KINDS else len(SERVER_KINDS), env)


def stage_results(stage: str) -> list[Result]:
    """A stage's results as the report holds them (all runs merged)."""
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    return [Result(**entry) for entry in report.get(stage, {}).get("results", [])]


def append_e2e_record(record: dict) -> None:
    """Stage (b) results accumulate in report.json["e2e"] as each environment's test finishes."""
    CACHE.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    current = {case.id for case in e2e.CASES}
    # Records of cases that are no longer defined are dropped with the first new record.
    entries = [
        e for e in report.get("e2e", {}).get("results", []) if e.get("env") in current - {record["env"]}
    ]
    entries.append(record)
    report["e2e"] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "passed": sum(e["status"] == "ok" for e in entries),
        "total": len(entries),
        "results": entries,
    }
    REPORT.write_text(json.dumps(report, indent=1))


def _kind_line(label: str, results: list[Result]) -> str:
    ok = sum(r.status == "ok" for r in results)
    line = f"  {label}: {ok}/{len(results)} raw"
    excluded = sum(bool(r.out_of_scope) for r in results)
    if excluded:
        built, counted = in_scope_rate(results)
        line += f", {built}/{counted} = {100 * built / max(counted, 1):.1f}% in scope ({excluded} excluded)"
    return line


def summary(results: list[Result], title: str) -> str:
    ok = sum(r.status == "ok" for r in results)
    lines = [f"{title}: {ok}/{len(results)} passed (raw)"]
    for kind in SERVER_KINDS:
        of_kind = [r for r in results if r.env.split("/")[0] == kind]
        if of_kind:
            lines.append(_kind_line(KIND_LABELS[kind], of_kind))
    others = [r for r in results if r.env.split("/")[0] not in SERVER_KINDS]
    if others:
        lines.append(_kind_line("environments/ bundles", others))
    excluded = [r for r in results if r.out_of_scope]
    if excluded:
        built, counted = in_scope_rate(results)
        lines.append(
            f"in scope: {built}/{counted} = {100 * built / max(counted, 1):.1f}% "
            f"({len(excluded)} excluded, each for the cause its own failure shows)"
        )
        classes = Counter(r.out_of_scope.split(": ", 1)[0] for r in excluded)
        for klass, count in classes.most_common():
            lines.append(f"  out of scope, {klass} ({count}):")
            for r in sorted(excluded, key=lambda r: r.env):
                if r.out_of_scope.split(": ", 1)[0] == klass:
                    lines.append(f"    {r.env}: {r.out_of_scope.split(': ', 1)[1]}")
    failed = [r for r in results if r.status != "ok" and not r.out_of_scope]
    causes = Counter(_cause(r) for r in failed)
    if causes:
        lines.append("failures in scope, by first error line:")
        for cause, count in causes.most_common():
            members = sorted(r.env for r in failed if _cause(r) == cause)
            lines.append(f"  {count:3d} × [{cause}]  {', '.join(members)}")
    return "\n".join(lines)


def e2e_summary(results: list[Result]) -> str:
    """Cases passed, and what the passing ones ran end to end, per kind."""
    proves = {case.id: case.proves for case in e2e.CASES}
    passed = [r for r in results if r.status == "ok"]
    lines = [
        f"e2e: {len(passed)}/{len(results)} environments ran end to end (every row with a numeric reward)"
    ]
    shown = {**KIND_LABELS, "environments": "environments/ bundles"}
    for kind, label in shown.items():
        names = sorted({p for r in passed for p in proves.get(r.env, ()) if p.split("/")[0] == kind})
        if names:
            lines.append(f"  {label} ({len(names)}): {', '.join(n.split('/', 1)[1] for n in names)}")
    for r in results:
        if r.status != "ok":
            lines.append(f"  failed: {r.env}: {r.error}")
    return "\n".join(lines)


def _cause(r: Result) -> str:
    # Group by the error's text with instance-specific bits (paths, names in quotes) blurred a little.
    text = re.sub(r"/[\w./+-]+", "<path>", r.error)
    return f"{r.stage}: {text}"[:220]


def e2e_results() -> list[Result]:
    """The latest record of every current e2e case, as the report holds them (all runs merged)."""
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    records = {e["env"]: e for e in report.get("e2e", {}).get("results", [])}
    return [
        Result(case.id, records[case.id]["status"], "e2e", records[case.id].get("error", ""))
        for case in e2e.CASES
        if case.id in records
    ]


def meets_floor(stage: str, results: list[Result]) -> bool:
    """Whether a stage's results reach issue 21's floor (e2e: a number of environments; the
    others: a share of the servers or bundles in scope)."""
    if stage == "e2e":
        return sum(r.status == "ok" for r in results) >= E2E_FLOOR
    passed, counted = in_scope_rate(results)
    return passed >= FLOORS[stage] * counted


_STAGES = {
    "build": run_build_stage,
    "bundles": run_bundles_stage,
    "e2e": run_e2e_stage,
    "own_tests": run_own_tests_stage,
}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "prepare":
        prepare()
        return 0
    if not argv or argv[0] not in _STAGES:
        print(__doc__)
        return 2
    stage, names = argv[0], argv[1:]
    results = _STAGES[stage](names or None)
    if names:  # a re-run of some: judge the stage on the report, where they replaced their entries
        results = e2e_results() if stage == "e2e" else stage_results(stage)
    print(e2e_summary(results) if stage == "e2e" else summary(results, stage))
    return 0 if meets_floor(stage, results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
