"""The vLLM simulator as an ng_run server instance (see configs/vllm_simulator.yaml).

It is not a Responses API model: it stands where `vllm serve` would, so a whole stack
(simulator + adapter + environments) can start from one ng_run command.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from aiohttp import web

from nemo_gym.config import ConfigError
from nemo_gym.config.strict_keys import DESCRIPTIVE_KEYS
from nemo_gym.server.context import load_runtime_context
from nemo_gym.server.listen_socket import inherited_listener
from nemo_gym.server.parent_watch import die_with_parent
from nemo_gym.testing.vllm_simulator import Faults, SimConfig, Simulator

_KEYS = {"model", "max_model_len", "reasoning_parser", "latency_ms", "per_token_ms", "instance_id", "api_key"}


def main() -> None:
    die_with_parent()
    try:
        context = load_runtime_context(Path(__file__))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    _, _, impl = context.instance_location()
    server_type, impl_name, _ = context.instance_location()
    known = sorted(_KEYS | {"entrypoint", "host", "port"})
    for key in sorted(set(impl) - set(known) - DESCRIPTIVE_KEYS):
        dotted = f"{context.instance_name}.{server_type}.{impl_name}.{key}"
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(known)}"
        error = ConfigError(
            f"is not a key of the vLLM simulator; {hint}", key=dotted, source=context.source_of(dotted)
        )
        print(f"config error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    config = SimConfig(**{k: v for k, v in impl.items() if k in _KEYS and v is not None}, faults=Faults())
    if not impl.get("instance_id"):
        config.instance_id = context.instance_name
    port = int(impl["port"])
    listener = inherited_listener(port)  # the socket ng_run bound for this instance, if it started us
    where: dict = (
        {"sock": listener} if listener is not None else {"host": impl.get("host", "127.0.0.1"), "port": port}
    )
    web.run_app(Simulator(config).app(), access_log=None, print=None, **where)


if __name__ == "__main__":
    main()
