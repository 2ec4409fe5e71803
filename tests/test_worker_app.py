"""`workers: N` rebuilds the server in each worker from the class reference the parent leaves in the
environment: by import name inside this checkout, by file for a server anywhere else."""

from __future__ import annotations

from pathlib import Path

from nemo_gym.config import PROJECT_ROOT
from nemo_gym.server.worker_app import load_server_class, server_class_reference


def test_a_server_of_this_checkout_is_named_by_module() -> None:
    entrypoint = PROJECT_ROOT / "responses_api_models/vllm_model/app.py"
    reference = server_class_reference(entrypoint, "VLLMModel")
    assert reference == "responses_api_models.vllm_model.app:VLLMModel"
    assert load_server_class(reference).__name__ == "VLLMModel"


def test_a_server_elsewhere_is_loaded_from_its_file_with_its_folder_first(tmp_path: Path) -> None:
    server = tmp_path / "resources_servers" / "maze"
    server.mkdir(parents=True)
    (server / "helpers.py").write_text("GREETING = 'hello'\n")
    (server / "app.py").write_text(
        "from helpers import GREETING\n\nclass MazeServer:\n    greeting = GREETING\n"
    )
    reference = server_class_reference(server / "app.py", "MazeServer")
    assert reference == f"{server / 'app.py'}:MazeServer"
    assert load_server_class(reference).greeting == "hello"


def test_a_hidden_folder_of_the_checkout_counts_as_elsewhere() -> None:
    hidden = PROJECT_ROOT / ".compat_cache/wheel/responses_api_agents/x/app.py"
    assert server_class_reference(hidden, "X") == f"{hidden}:X"
