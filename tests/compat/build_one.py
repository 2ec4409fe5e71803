"""Stage (a) for one environment, in its own process: import the entrypoint its config names
(usually app.py), build its FastAPI app from that config, and check its routes.

    python build_one.py <resources_servers|responses_api_agents|environment_servers> <name> <wheel_root>

Run by harness.build_one with the compat venv's python, cwd = the environment's directory
(as ng_run starts servers). Prints one line `NG_COMPAT_RESULT {json}`: status ok /
<stage>_error / timeout, the stage that failed and the error's first line. What a user would
supply (API keys, peer servers) is supplied as placeholders; name lookups that fail are
recorded in the detail, as evidence for the harness's scope verdict.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STAGE = "start"
DETAIL: dict[str, Any] = {}


def emit(status: str, error: str = "") -> None:
    print(
        "NG_COMPAT_RESULT " + json.dumps({"status": status, "stage": STAGE, "error": error, "detail": DETAIL})
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # environments may leave threads (Ray, executors) behind


def error_line(exc: BaseException) -> str:
    # The first line that says something (NLTK, for one, opens its messages with a row of stars).
    lines = [ln.strip() for ln in str(exc).splitlines() if re.search(r"[A-Za-z0-9]", ln)]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def placeholder(var: str) -> Any:
    if var.endswith("base_url") or var.endswith("_url"):
        return "http://127.0.0.1:9/v1"
    if var.endswith("api_key") or var.endswith("_token") or var.endswith("TOKEN") or var.endswith("KEY"):
        return "EMPTY"
    if var.endswith("model_name") or var.endswith("_model"):
        return "sim-model"
    if var.endswith(("_dir", "_path", "_fpath", "_file", "_image")):
        # A file the user would point at: an empty one (a directory for *_dir).
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="ng_compat_"))
        if var.endswith("_dir"):
            return str(base)
        (base / var).touch()
        return str(base / var)
    return "placeholder"


# Values a config leaves to its user: `${name}`, `${oc.select:name,null}` (no usable default)
# and `${oc.env:NAME}` (an environment variable without a default).
_PLAIN_VAR = re.compile(r"\$\{([A-Za-z_]\w*)\}")
_SELECT_VAR = re.compile(r"\$\{oc\.select:([A-Za-z_]\w*)(?:,\s*(?:null|None|~)?\s*)?\}")
_ENV_VAR = re.compile(r"\$\{oc\.env:([A-Za-z_]\w*)\}")


def user_supplied_names(text: str) -> set[str]:
    return set(_PLAIN_VAR.findall(text)) | set(_SELECT_VAR.findall(text))


def supply_env_vars(text: str) -> None:
    for var in _ENV_VAR.findall(text):
        if var not in os.environ:
            os.environ[var] = placeholder(var)
            DETAIL.setdefault("placeholder_env", []).append(var)


SERVER_KINDS = ("resources_servers", "responses_api_agents", "responses_api_models", "environment_servers")


def _instances_of(path: Path, kind: str, name: str) -> list[str]:
    import yaml

    text = path.read_text(errors="replace")
    if f"{name}:" not in text:
        return []
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return []
    if not isinstance(raw, dict):
        return []
    return [
        inst
        for inst, block in raw.items()
        if isinstance(block, dict) and isinstance(block.get(kind), dict) and name in block[kind]
    ]


def config_candidates(kind: str, name: str, env_dir: Path, wheel_root: Path) -> list[tuple[Path, str]]:
    """(config file, instance) pairs that instantiate this environment: its own configs (the one
    named after it first; sub-folders' too), then other servers', bundles' and benchmarks' configs
    that use it (an agent's own config may be a template that environments fill in)."""
    own = sorted(env_dir.glob("**/configs/*.yaml"), key=lambda p: (p.stem != name, len(p.parts), p.name))
    elsewhere = [
        *wheel_root.glob("*/*/configs/*.yaml"),
        *wheel_root.glob("environments/*/config*.yaml"),
        *wheel_root.glob("benchmarks/**/*.yaml"),
    ]
    others = sorted(p for p in elsewhere if env_dir not in p.parents)
    return [(path, inst) for path in own + others for inst in _instances_of(path, kind, name)]


def load_block(path: Path, instance: str, kind: str, name: str, env_dir: Path) -> tuple[dict, dict]:
    """One instance's block and the whole config, loaded with our own config loader (as ng_run
    loads it) with placeholders for the values the config leaves to its user; falls back to
    plain OmegaConf (recording why) if our loader rejects the file."""
    import yaml
    from omegaconf import OmegaConf

    text = path.read_text()
    raw = yaml.safe_load(text) or {}
    extras = {v: placeholder(v) for v in user_supplied_names(text) if v not in raw}
    # `${oc.select:name,null}` may be a genuine "unset" (a mode, a path); only secrets and
    # addresses, which a run cannot do without, get a placeholder.
    optional = set(_SELECT_VAR.findall(text)) - set(_PLAIN_VAR.findall(text))
    extras = {k: v for k, v in extras.items() if k not in optional or v == "EMPTY" or v.startswith("http")}
    supply_env_vars(text)
    try:
        from nemo_gym.config import load_config

        args = [f"+config_paths=[{path}]"] + [f"+{k}={v}" for k, v in extras.items()]
        loaded = load_config(args, cwd=Path(os.environ.get("NG_COMPAT_WHEEL_ROOT", env_dir)))
        full = OmegaConf.to_container(loaded.config, resolve=True)
    except Exception as exc:  # our loader's verdict is recorded, the build goes on
        DETAIL["config_loader_error"] = error_line(exc)
        cfg = OmegaConf.merge(OmegaConf.create(extras), OmegaConf.create(raw))
        full = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    block = full[instance][kind][name]
    _fill_mandatory(block)
    return block, full


def _fill_mandatory(node: Any, key: str = "") -> None:
    """`???` values the user must set (a URL, a key, a path) get the placeholder a user would
    supply; other `???` (a peer's name) stay, as before."""
    if isinstance(node, dict):
        for child_key, value in node.items():
            if value == "???":
                stand_in = placeholder(str(child_key))
                if stand_in != "placeholder":
                    node[child_key] = stand_in
                    DETAIL.setdefault("placeholder_values", []).append(f"{key}{child_key}")
            else:
                _fill_mandatory(value, f"{key}{child_key}.")


# A config naming `sandbox_provider: NAME` expects the user to add a provider config defining
# NAME to config_paths; the build adds our local provider's, as the sandbox README suggests.
LOCAL_SANDBOX_CONFIG = "nemo_gym/sandbox/providers/local/configs/local.yaml"


def supply_sandbox_provider(block: dict, full: dict) -> None:
    import yaml

    from nemo_gym.config import PROJECT_ROOT

    name = block.get("sandbox_provider")
    if isinstance(name, str) and name not in full:
        provider = yaml.safe_load((PROJECT_ROOT / LOCAL_SANDBOX_CONFIG).read_text())["sandbox"]
        full[name] = provider
        DETAIL["sandbox_provider"] = f"{name}: {LOCAL_SANDBOX_CONFIG}"


class _Peer(BaseHTTPRequestHandler):
    """Any request gets `200 {}`: the build only needs peers to be reachable, not to be right."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


def point_peers_at_stub(full: dict, instance: str) -> None:
    """Every other server instance of the config answers at one local stub address, as ng_run
    would have them up: some environments wait in `setup_webserver()` until a judge answers."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Peer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    peers = []
    for inst, block in full.items():
        if inst == instance or not isinstance(block, dict):
            continue
        for kind in SERVER_KINDS:
            for body in (block.get(kind) or {}).values() if isinstance(block.get(kind), dict) else ():
                if isinstance(body, dict):
                    body.update(host="127.0.0.1", port=httpd.server_port)
                    peers.append(inst)
    if peers:
        DETAIL["peers_at_stub"] = sorted(set(peers))


def record_failed_lookups() -> None:
    """Name lookups that fail are recorded: they are the evidence that a build needs the network."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return real(host, *args, **kwargs)
        except socket.gaierror:
            name = host.decode() if isinstance(host, bytes) else str(host)
            failed = DETAIL.setdefault("unresolved_hosts", [])
            if name not in failed:
                failed.append(name)
            raise

    socket.getaddrinfo = getaddrinfo


def start_watchdog(seconds: float, wheel_root: Path) -> None:
    """Past `seconds`, report where the build is stuck (the innermost line of environment code)
    instead of hanging until the harness kills us without a reason."""
    main_id = threading.main_thread().ident

    def fire() -> None:
        frame = sys._current_frames().get(main_id)
        where = ""
        stack = traceback.extract_stack(frame) if frame is not None else []
        for entry in reversed(stack):
            if entry.filename.startswith(str(wheel_root)):
                rel = Path(entry.filename).relative_to(wheel_root)
                where = f"{rel}:{entry.lineno}: {(entry.line or '').strip()}"
                break
        if not where and stack:
            where = f"{stack[-1].filename}:{stack[-1].lineno}: {(stack[-1].line or '').strip()}"
        DETAIL["stack_tail"] = [f"{e.filename}:{e.lineno}: {(e.line or '').strip()}" for e in stack[-6:]]
        emit("timeout", f"still in stage {STAGE} after {seconds:.0f}s, at {where}"[:300])

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


def set_stage(stage: str) -> None:
    global STAGE
    STAGE = stage


def base_class(kind: str) -> type:
    set_stage("core_import")
    if kind == "resources_servers":
        from nemo_gym.base_resources_server import SimpleResourcesServer as Base
    elif kind == "environment_servers":
        from nemo_gym.base_environment_server import BaseEnvironmentServer as Base
    else:
        from nemo_gym.base_responses_api_agent import SimpleResponsesAPIAgent as Base

    return Base


def entrypoint_of(block: dict) -> str:
    entrypoint = block.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint or entrypoint == "???":
        # A template config leaves the entrypoint to the user ("???"): the package's app.py.
        DETAIL["entrypoint_note"] = f"config's entrypoint is {entrypoint!r}; app.py tried"
        entrypoint = "app.py"
    DETAIL["entrypoint"] = entrypoint
    return entrypoint


def import_entrypoint(kind: str, name: str, entrypoint: str, env_dir: Path, wheel_root: Path) -> Any:
    set_stage("import")
    # `python app.py` (how ng_run starts a server) puts the app's own directory first on sys.path;
    # environments rely on it for sibling modules (`from utils import …`).
    sys.path[0] = str(env_dir)
    module_name = ".".join([kind, *name.split("/"), *Path(entrypoint).with_suffix("").parts])
    module = importlib.import_module(module_name)
    DETAIL["module_file"] = getattr(module, "__file__", None)
    if DETAIL["module_file"] and not str(DETAIL["module_file"]).startswith(str(wheel_root)):
        raise RuntimeError(f"{module_name} resolved to {DETAIL['module_file']}, not the wheel's copy")
    return module


def server_class(module: Any, base: type, entrypoint: str) -> type:
    """The module's most derived server class of `base`."""
    set_stage("find_class")
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, base)
        and obj is not base
        and obj.__module__ == module.__name__
    ]
    leaves = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
    if not leaves:
        DETAIL["server_like_classes"] = sorted(
            obj.__name__
            for obj in vars(module).values()
            if inspect.isclass(obj) and any(c.__name__.startswith("Simple") for c in obj.__mro__[1:])
        )
        raise LookupError(f"{entrypoint} defines no subclass of {base.__name__}")
    DETAIL["class"] = leaves[0].__name__
    return leaves[0]


def config_class(cls: type) -> Any:
    fields = getattr(cls, "model_fields", {})
    config_cls = (
        fields["config"].annotation if "config" in fields else inspect.get_annotations(cls).get("config")
    )
    if isinstance(config_cls, str) or config_cls is None:
        import typing

        config_cls = typing.get_type_hints(cls).get("config")
    DETAIL["config_class"] = getattr(config_cls, "__name__", str(config_cls))
    return config_cls


def validated_config(
    config_cls: Any, candidates: list[tuple[Path, str]], first: tuple[dict, dict], entrypoint: str, port: int
) -> tuple[Any, dict, dict, str]:
    """(config, block, full config, instance) of the first candidate whose block validates; the server's own
    config is tried first, its error reported if none does."""
    set_stage("config_validate")
    kind, name, env_dir, wheel_root = SERVER
    first_error: BaseException | None = None
    for index, (path, instance) in enumerate(candidates):
        if index:
            try:
                block, full = load_block(path, instance, kind, name, env_dir)
            except Exception:  # noqa: BLE001 - another environment's config; try the next
                continue
            if block.get("entrypoint") not in (entrypoint, None, "???"):
                continue
        else:
            block, full = first
        try:
            config = config_cls.model_validate({**block, "name": instance, "host": "127.0.0.1", "port": port})
        except Exception as exc:  # noqa: BLE001 - the own config's error is the one reported
            first_error = first_error or exc
            continue
        if index:
            own = candidates[0][0].relative_to(wheel_root)
            DETAIL["config_note"] = (
                f"{own} did not validate ({error_line(first_error)}); built from a config that uses it"
            )
        DETAIL["config"] = f"{path.relative_to(wheel_root)}:{instance}"
        return config, block, full, instance
    assert first_error is not None
    raise first_error


def construct(cls: type, config: Any, block: dict, full: dict, instance: str, port: int) -> Any:
    set_stage("construct")
    from nemo_gym.server_utils import ServerClient

    block.update(host="127.0.0.1", port=port)
    supply_sandbox_provider(block, full)
    # ng_run always runs a policy model, and servers may read its block from the global config.
    full.setdefault("policy_model", {"responses_api_models": {"vllm_model": {"entrypoint": "app.py"}}})
    point_peers_at_stub(full, instance)
    full.setdefault("head_server", {"host": "127.0.0.1", "port": free_port()})
    try:
        client = ServerClient(full)
    except TypeError:
        from omegaconf import OmegaConf

        client = ServerClient(
            head_server_config=full["head_server"], global_config_dict=OmegaConf.create(full)
        )
    return cls(config=config, server_client=client)


def check_routes(server: Any, kind: str) -> None:
    set_stage("setup_webserver")
    app = server.setup_webserver()
    from fastapi import FastAPI

    if not isinstance(app, FastAPI):
        raise TypeError(f"setup_webserver() returned {type(app).__name__}, not FastAPI")
    routes = sorted({getattr(r, "path", "") for r in app.routes} - {""})
    DETAIL["routes"] = routes
    # Gymnasium-style resources servers are driven through /reset and /step instead of /verify.
    needs = [["/verify"], ["/reset", "/step"]] if kind == "resources_servers" else [["/run"]]
    if not any(all(r in routes for r in group) for group in needs):
        set_stage("routes")
        wanted = " or ".join(" + ".join(group) for group in needs)
        raise LookupError(f"app has no {wanted} route (routes: {', '.join(routes)})")


# (kind, name, env_dir, wheel_root) of the server this process builds.
SERVER: tuple[str, str, Path, Path]


def main() -> None:
    global SERVER
    kind, name, wheel_root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    os.environ["NG_COMPAT_WHEEL_ROOT"] = str(wheel_root)
    env_dir = wheel_root / kind / name
    SERVER = (kind, name, env_dir, wheel_root)
    start_watchdog(float(os.environ.get("NG_COMPAT_BUILD_WATCHDOG", "80")), wheel_root)
    record_failed_lookups()
    base = base_class(kind)

    set_stage("config")
    candidates = config_candidates(kind, name, env_dir, wheel_root)
    if not candidates:
        raise LookupError(f"no configs/*.yaml has a '<instance>: {{{kind}: {{{name}: ...}}}}' block")
    path, instance = candidates[0]
    first = load_block(path, instance, kind, name, env_dir)
    entrypoint = entrypoint_of(first[0])

    module = import_entrypoint(kind, name, entrypoint, env_dir, wheel_root)
    cls = server_class(module, base, entrypoint)
    config_cls = config_class(cls)
    port = free_port()
    config, block, full, instance = validated_config(config_cls, candidates, first, entrypoint, port)
    server = construct(cls, config, block, full, instance, port)
    check_routes(server, kind)
    set_stage("done")
    emit("ok")


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:  # noqa: BLE001 - every failure is the result
        DETAIL["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
        emit(f"{STAGE}_error", error_line(exc))
