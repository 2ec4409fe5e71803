"""Provider config resolution, the registry's errors, the spec types' validation, and the
cloud providers that are accepted in config and refused at start."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from nemo_gym.sandbox import (
    SandboxCreateError,
    SandboxEndpoint,
    SandboxProviderUnavailableError,
    SandboxResources,
    SandboxSpec,
    create_provider,
    get_provider_class,
    list_providers,
    register_provider,
    resolve_provider_config,
    resolve_provider_metadata,
    rewrite_image,
)
from nemo_gym.sandbox.providers import registry
from nemo_gym.sandbox.providers.local import LocalProvider
from nemo_gym.sandbox.utils import CPU_CAP_ENV_VARS, cpu_cap_env

MERGED = OmegaConf.create(
    {
        "sandbox": {"default_metadata": {"sandbox-api": "local"}, "local": {"default_timeout_s": 30}},
        "other_sandbox": {"isolated": {"network": "none"}},
        "policy_model": {"responses_api_models": {"vllm_model": {}}},
        "timeout": "${sandbox.local.default_timeout_s}",
    }
)


def test_named_and_inline_blocks_resolve() -> None:
    assert resolve_provider_config("sandbox", MERGED) == {"local": {"default_timeout_s": 30}}
    assert resolve_provider_metadata("sandbox", MERGED) == {"sandbox-api": "local"}
    assert resolve_provider_metadata("other_sandbox", MERGED) == {}
    assert resolve_provider_config({"docker": {"exec": {}}}) == {"docker": {"exec": {}}}


def test_unknown_reference_suggests_the_block_and_the_config_file() -> None:
    with pytest.raises(ValueError) as caught:
        resolve_provider_config("sandbx", MERGED)
    message = str(caught.value)
    assert (
        "sandbox_provider 'sandbx' names no top-level block of the merged config; did you mean 'sandbox'?"
        in message
    )
    assert "nemo_gym/sandbox/providers/local/configs/local.yaml" in message


def test_blocks_with_several_providers_or_wrong_types_are_refused() -> None:
    with pytest.raises(ValueError, match=r"must hold exactly one provider key .* got \['local', 'docker'\]"):
        resolve_provider_config({"local": {}, "docker": {}})
    with pytest.raises(TypeError, match="sandbox_provider must be the name of a sandbox config block"):
        resolve_provider_config(3)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="default_metadata of the inline sandbox_provider block must be a mapping"
    ):
        resolve_provider_metadata({"local": {}, "default_metadata": ["x"]})


def test_unknown_provider_and_unknown_key_say_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"unknown sandbox provider 'isolate'; did you mean 'isolated'\?"):
        create_provider({"isolate": {}})
    with pytest.raises(
        ValueError,
        match=r"'workspce_root' is not a key of sandbox provider 'local'; did you mean 'workspace_root'\?",
    ):
        create_provider({"local": {"workspce_root": "/tmp/x"}})
    # Nested sections are checked before the provider looks for its binary.
    with pytest.raises(
        ValueError, match=r"'exec_shel' is not a key of docker exec; did you mean 'exec_shell'\?"
    ):
        create_provider({"docker": {"exec": {"exec_shel": "bash"}}})
    with pytest.raises(ValueError, match="exactly one key, the provider's name"):
        create_provider({"local": {}, "isolated": {}})


def test_registry_lists_builtins_and_registers_new_ones() -> None:
    assert {
        "local",
        "isolated",
        "docker",
        "apptainer",
        "e2b",
        "daytona",
        "enroot",
        "opensandbox",
        "openshell",
        "ecs_fargate",
    } <= set(list_providers())
    assert get_provider_class("local") is LocalProvider

    class Mine(LocalProvider):
        name = "mine"

    register_provider("mine", Mine)
    try:
        assert isinstance(create_provider({"mine": {}}), Mine)
        with pytest.raises(ValueError, match="sandbox provider 'mine' is already registered"):
            register_provider("mine", Mine)
    finally:
        registry._REGISTERED.pop("mine")


NEEDS = {
    "apptainer": "the Apptainer runtime (the `apptainer` binary",
    "enroot": "NVIDIA enroot (the `enroot` binary",
    "e2b": "the E2B cloud service (the `e2b` Python SDK and an E2B_API_KEY)",
    "daytona": "a Daytona server (the `daytona` Python SDK, DAYTONA_API_KEY and DAYTONA_API_URL)",
    "opensandbox": "an OpenSandbox server (the `opensandbox` Python SDK",
    "openshell": "an OpenShell gateway (the `openshell` Python package",
    "ecs_fargate": "AWS ECS Fargate (boto3, AWS credentials",
}


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_cloud_providers_are_accepted_in_config_and_refused_at_start(name: str) -> None:
    from pathlib import Path

    import nemo_gym

    shipped = Path(nemo_gym.__file__).parent / "sandbox" / "providers" / name / "configs" / f"{name}.yaml"
    block = resolve_provider_config("sandbox", OmegaConf.load(shipped))
    assert block == {name: {}}
    with pytest.raises(SandboxProviderUnavailableError) as caught:
        create_provider(block)
    message = str(caught.value)
    assert message.startswith(f"sandbox provider {name!r} needs {NEEDS[name]}")
    assert "use the 'isolated' provider" in message
    assert isinstance(caught.value, SandboxCreateError)
    if name != "ecs_fargate":  # its config is free-form; the others' keys are checked
        with pytest.raises(ValueError, match=f"'conection' is not a key of sandbox provider '{name}'"):
            create_provider({name: {"conection": {}}})


def test_spec_and_resources_validation() -> None:
    spec = SandboxSpec(resources={"cpu": "2", "memory_mib": 512.0}, ports=["8080", 9090])
    assert spec.resources == SandboxResources(cpu=2.0, memory_mib=512)
    assert spec.ports == (8080, 9090)
    with pytest.raises(
        ValueError, match=r"unknown sandbox resource key 'memory'; did you mean 'memory_mib'\?"
    ):
        SandboxSpec(resources={"memory": 1})
    with pytest.raises(ValueError, match="sandbox TCP port 80 is listed twice"):
        SandboxSpec(ports=[80, "80"])
    with pytest.raises(ValueError, match="not a TCP port: True"):
        SandboxSpec(ports=[True])
    with pytest.raises(ValueError, match=r"in 1..65535, got 70000"):
        SandboxSpec(ports=[70000])
    assert SandboxEndpoint(" http://h:1 ", {"a": 1}) == SandboxEndpoint("http://h:1", {"a": "1"})
    with pytest.raises(ValueError, match="must be an absolute URL"):
        SandboxEndpoint("h:1/x")


def test_cpu_cap_env_and_rewrite_image() -> None:
    assert cpu_cap_env(None) == {}
    assert cpu_cap_env(0.5) == dict.fromkeys(CPU_CAP_ENV_VARS, "1")
    assert cpu_cap_env(3.9)["OMP_NUM_THREADS"] == "3"
    rules = [{"from": "docker.io/", "to": "mirror.local/"}, {"from": "docker.io/library/", "to": "never/"}]
    assert rewrite_image("docker.io/library/python:3.12", rules) == "mirror.local/library/python:3.12"
    assert rewrite_image("ghcr.io/x", rules) == "ghcr.io/x"
    assert rewrite_image(None, rules) is None
