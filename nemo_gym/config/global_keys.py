"""NeMo Gym's top-level config keys, each with what it does in this product.

Trainers (NeMo RL, veRL, TRL) hand these to `RunHelper.start` and users put them on `ng_run`'s
command line, so every key NeMo Gym 0.7.0 defines is accepted. Where a key steers something this
product does differently (NeMo Gym builds one virtualenv per server; we run every server in the
caller's environment), it is accepted and its description says it has no effect here, so a config
written for NeMo Gym runs unchanged instead of failing on a key it cannot use.

Any other top-level key is a variable for `${…}` interpolation, as in NeMo Gym.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nemo_gym.config.errors import ConfigError

NO_EFFECT = (
    "Accepted for NeMo Gym configs; no effect here: every server runs in the caller's Python environment."
)


class HeadServerKeys(BaseModel):
    """Where the head server listens; every command that talks to a running ng_run needs it."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Head server host.")
    port: int = Field(11000, description="Head server port.")


class GlobalKeys(BaseModel):
    """The keys, typed: a wrong value fails at start, naming the key and the file that set it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    # --- where servers listen and what they advertise ---------------------------------
    config_paths: list[str] = Field(
        default_factory=list, description="Config YAML files merged, lowest first."
    )
    head_server: HeadServerKeys = Field(default_factory=HeadServerKeys, description="Head server address.")
    default_host: str | None = Field(
        None,
        description="Address every server without its own `host` listens on and advertises (a node IP for "
        "multi-node training; default 127.0.0.1).",
    )
    use_absolute_ip: bool = Field(
        False, description="Use this machine's hostname address as default_host (when default_host is unset)."
    )
    port_range_low: int | None = Field(
        None, ge=1, lt=65536, description="Lowest port chosen for servers without one (with port_range_high)."
    )
    port_range_high: int | None = Field(
        None, ge=1, lt=65536, description="Highest port chosen for servers without one (with port_range_low)."
    )
    disallowed_ports: list[int] = Field(default_factory=list, description="Ports never chosen for a server.")
    # --- start-up ----------------------------------------------------------------------
    dry_run: bool = Field(
        False, description="Resolve and check the config, print the servers, start nothing."
    )
    server_spinup_timeout_seconds: float | None = Field(
        None, description="Seconds every server gets to answer /health (overrides ng_run's startup_timeout)."
    )
    model_endpoint_readiness_timeout_seconds: float | None = Field(
        None,
        description="When set above 0, wait up to this long for every model server's upstreams to accept "
        "connections, and fail the start naming those that never did. Unset: check once and warn.",
    )
    ray_head_node_address: str | None = Field(
        None, description="Ray cluster to join (host:port); joined at start and handed to every server."
    )
    nemo_gym_log_dir: str | None = Field(
        None, description="Write each server's output to <dir>/<name>.log (as ng_run's log_dir)."
    )
    verbose: bool = Field(False, description="Debug logging in every process.")
    hf_token: str | None = Field(
        None, description="Hugging Face token, given to every server as HF_TOKEN (never logged)."
    )
    # --- the pooled client between servers (ServerClient) ------------------------------
    global_aiohttp_connector_limit: int = Field(
        100 * 1024,
        ge=0,
        description="Most open connections of each process's ServerClient pool (0: no limit).",
    )
    global_aiohttp_connector_limit_per_host: int = Field(
        1024, ge=0, description="Most open connections to one server from each process's pool (0: no limit)."
    )
    global_aiohttp_intended_concurrency: int | None = Field(
        None, gt=0, description="Accepted; not used here."
    )
    global_aiohttp_intended_concurrency_per_host: int | None = Field(
        None, gt=0, description="Accepted; not used here."
    )
    global_aiohttp_client_request_debug: bool = Field(False, description="Accepted; not used here.")
    global_aiohttp_tcp_keepalive_idle_seconds: int = Field(
        60, ge=1, le=32767, description="Accepted; not used."
    )
    global_aiohttp_tcp_keepalive_interval_seconds: int = Field(10, ge=1, le=32767, description="Accepted.")
    global_aiohttp_tcp_keepalive_probes: int = Field(3, ge=1, le=127, description="Accepted; not used here.")
    server_call_timeout_seconds: float = Field(
        4 * 3600.0,
        gt=0,
        description="Longest wait for an answer on any call between servers (a /run included); hitting it "
        "names the server and the path.",
    )
    # --- rollouts ------------------------------------------------------------------------
    skip_verification: bool | None = Field(None, description="Agents skip /verify (given to every agent).")
    skip_verification_reward: float | None = Field(
        None, description="The reward agents report when skipping /verify (given to every agent)."
    )
    allow_unsupported_pairing: bool = Field(False, description="Allow agent/resources pairings not declared.")
    environment_server_name: str | None = Field(None, description="Environment server for flat rows.")
    environment_server_routes: dict[str, str] = Field(
        default_factory=dict, description="Environment servers keyed by taskset."
    )
    environment_routing_mode: str | None = Field(None, description="How rows reach environment servers.")
    error_on_agent_without_environment_server: bool = Field(
        False, description="Accepted; agents without an environment server are called directly here."
    )
    # --- NeMo Gym's per-server virtualenvs and other tooling: no effect here ---------------
    python_version: str | None = Field(None, description=NO_EFFECT)
    pip_install_verbose: bool = Field(False, description=NO_EFFECT)
    uv_pip_set_python: bool = Field(False, description=NO_EFFECT)
    skip_venv_if_present: bool = Field(False, description=NO_EFFECT)
    uv_cache_dir: str | None = Field(None, description=NO_EFFECT)
    uv_lock_timeout_seconds: float | None = Field(None, description=NO_EFFECT)
    uv_venv_dir: str | None = Field(None, description=NO_EFFECT)
    head_server_deps: list[str] | None = Field(None, description=NO_EFFECT)
    allow_openai_version_skew: bool = Field(False, description=NO_EFFECT)
    uvicorn_timeout_worker_healthcheck: float | None = Field(None, description=NO_EFFECT)
    results_dir: str | None = Field(None, description="Accepted; commands take their output paths as keys.")
    cache_dir: str | None = Field(None, description="Accepted; not used here.")
    json_output: bool = Field(False, alias="json", description="Accepted (a `gym` listing flag).")
    query: str | None = Field(None, description="Accepted (a `gym` listing flag).")
    observability_enabled: bool | None = Field(None, description="Accepted; not used here.")
    model_call_capture_dir: str | None = Field(None, description="Accepted; not used here.")
    token_id_capture: dict[str, Any] | None = Field(
        None, description="Accepted; token ids come from the adapter."
    )
    telemetry: dict[str, Any] | None = Field(
        None, description="Accepted; every server serves /metrics instead."
    )
    component_name: str | None = Field(None, description="Accepted; not used here.")
    error_on_almost_servers: bool = Field(True, description="Accepted; malformed servers are always errors.")
    entrypoint: str | None = Field(None, description="Reserved by NeMo Gym; not a server here.")
    policy_base_url: Any = Field(
        None, description="The policy model's upstream URL(s), for `${policy_base_url}`."
    )
    policy_api_key: str | None = Field(None, description="The policy upstream's API key (never logged).")
    policy_model_name: str | None = Field(None, description="The policy model's name upstream.")

    @model_validator(mode="after")
    def _range_in_order(self) -> GlobalKeys:
        low, high = self.port_range_low, self.port_range_high
        if (low is None) != (high is None):
            raise ValueError("port_range_low and port_range_high go together; set both")
        if low is not None and high is not None and low > high:
            raise ValueError(f"port_range_low ({low}) is above port_range_high ({high})")
        return self


GLOBAL_KEY_NAMES: frozenset[str] = frozenset(f.alias or n for n, f in GlobalKeys.model_fields.items())


def validate_global_keys(config: dict[str, Any], origins: dict[str, str] | None = None) -> GlobalKeys:
    """The known top-level keys of a resolved config, typed; a bad value names its key and file."""
    from nemo_gym.config.loader import source_of
    from nemo_gym.config.redact import is_secret_key

    known = {k: v for k, v in config.items() if k in GLOBAL_KEY_NAMES}
    try:
        return GlobalKeys.model_validate(known)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or None
        where = source_of(origins or {}, key or "") if key else None
        if key is None:  # a rule over two keys
            key = "port_range_low"
            where = source_of(origins or {}, key)
        message = str(first["msg"]).removeprefix("Value error, ")
        shown = first.get("input") is not None and first["loc"] and not is_secret_key(key)
        got = f" (got {first['input']!r})" if shown else ""
        raise ConfigError(f"{message}{got}", key=key, source=where) from None
