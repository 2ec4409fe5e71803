"""tests/compat/scope.py: a build failure leaves the bar only on the evidence of its own error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat import scope

UNREACHABLE = {"github.com", "codeload.github.com", "huggingface.co", "raw.githubusercontent.com"}


def verdict(error, detail=None, install=None, env="resources_servers/demo", tmp=None, npm=None):
    env_dir = (tmp or Path("/nonexistent")) / env
    return scope.classify(
        error,
        detail or {},
        install or {},
        env_dir,
        resolves=lambda host: host not in UNREACHABLE,
        npm_has=lambda spec: npm,
    )


def test_missing_app_is_abstract_only_when_the_file_is_absent(tmp_path: Path):
    error = "ModuleNotFoundError: No module named 'resources_servers.demo.app'"
    assert verdict(error, tmp=tmp_path) == (
        scope.ABSTRACT,
        "has no app.py: a base that other environments build on",
    )
    (tmp_path / "resources_servers" / "demo").mkdir(parents=True)
    (tmp_path / "resources_servers" / "demo" / "app.py").write_text("")
    assert verdict(error, tmp=tmp_path) is None


def test_abstract_class():
    error = "TypeError: Can't instantiate abstract class Adapter with abstract methods build_graph, get_state"
    assert verdict(error) == (
        scope.ABSTRACT,
        "Adapter leaves abstract methods to subclasses: build_graph, get_state",
    )


def test_other_type_errors_stay_in_scope():
    assert verdict("TypeError: verify() takes 2 positional arguments but 3 were given") is None


def test_module_from_a_git_requirement():
    install = {
        "skipped": [
            "-e nemo-gym[dev] @ ../../ (the framework itself)",
            "finance-agent @ git+https://github.com/org/finance-agent-v2.git@abc (not on PyPI)",
        ]
    }
    assert verdict("ModuleNotFoundError: No module named 'finance_agent'", install=install) == (
        scope.NOT_ON_REGISTRY,
        "'finance_agent' comes from finance-agent @ git+https://github.com/org/finance-agent-v2.git@abc, which is not on PyPI",
    )


def test_module_matched_by_repository_name_and_inside_another_message():
    install = {"skipped": ["git+https://github.com/someone/verifiable-instructions.git (not on PyPI)"]}
    error = "RuntimeError: Failed to import 'x': No module named 'verifiable_instructions.core'. Install it."
    klass, reason = verdict(error, install=install)
    assert klass == scope.NOT_ON_REGISTRY and "verifiable-instructions.git" in reason


def test_missing_module_without_a_matching_skipped_requirement_stays_in_scope():
    install = {
        "skipped": [
            "other @ git+https://github.com/o/other.git (not on PyPI)",
            "torch (heavy; NG_COMPAT_HEAVY=1 installs it)",
        ]
    }
    assert verdict("ModuleNotFoundError: No module named 'nemo_fabric'", install=install) is None
    assert verdict("ModuleNotFoundError: No module named 'lxml'", install=install) is None


def test_module_of_a_requirement_skipped_as_heavy():
    install = {"skipped": ["sentence-transformers>=3 (heavy; NG_COMPAT_HEAVY=1 installs it)"]}
    assert verdict("ModuleNotFoundError: No module named 'sentence_transformers'", install=install) == (
        scope.HEAVY,
        "'sentence_transformers' comes with sentence-transformers>=3, skipped as heavy (NG_COMPAT_HEAVY=1 installs it)",
    )
    # torch itself is pulled in by every heavy requirement.
    klass, reason = verdict("ModuleNotFoundError: No module named 'torch.nn'", install=install)
    assert klass == scope.HEAVY and reason.startswith("'torch.nn' comes with sentence-transformers>=3")
    # Without a heavy requirement skipped, a missing torch is not excused.
    assert verdict("ModuleNotFoundError: No module named 'torch'", install={"skipped": []}) is None


def test_missing_module_of_ours_is_never_excused():
    install = {"skipped": ["nemo-gym-rollout @ git+https://github.com/o/nemo_gym.git (not on PyPI)"]}
    assert (
        verdict("ModuleNotFoundError: No module named 'nemo_gym.rollout_correlation'", install=install)
        is None
    )


def test_npm_package_missing_from_its_registry():
    error = "CalledProcessError: Command '['/usr/bin/npm', 'install', '-g', 'cline@3.0.55']' returned non-zero exit status 1."
    assert verdict(error, npm=False) == (scope.NOT_ON_REGISTRY, "npm has no cline@3.0.55")
    assert verdict(error, npm=True) is None
    assert verdict(error, npm=None) is None


def test_missing_tool():
    error = "RuntimeError: uv is required to build the venv but was not found on PATH. Install with `pip install uv`."
    klass, reason = verdict(error)
    assert klass == scope.TOOL and reason.startswith("uv is not on PATH")


def test_requirement_that_raises_on_import():
    detail = {
        "traceback_tail": [
            '  File "/v/lib/python3.11/site-packages/justext/core.py", line 21, in <module>',
            "    from lxml.html.clean import Cleaner",
            '  File "/v/lib/python3.11/site-packages/lxml/html/clean.py", line 18, in <module>',
        ]
    }
    error = "ImportError: lxml.html.clean module is now a separate project lxml_html_clean."
    assert verdict(error, detail) == (
        scope.BROKEN_REQUIREMENT,
        "lxml raises on import: lxml.html.clean module is now a separate project lxml_html_clean.",
    )


def test_import_error_in_environment_code_stays_in_scope():
    detail = {"traceback_tail": ['  File "/wheel/resources_servers/demo/app.py", line 3, in <module>']}
    assert verdict("ImportError: cannot import name 'Thing' from 'nemo_gym.openai_utils'", detail) is None


def test_network_from_a_url_in_the_command():
    error = "CalledProcessError: Command '['git', 'clone', 'https://github.com/org/repo', '/x']' returned non-zero exit status 128."
    assert verdict(error) == (scope.NETWORK, "github.com (does not resolve here)")


def test_network_from_host_keyword_and_recorded_lookups():
    error = "ConnectionError: HTTPSConnectionPool(host='codeload.github.com', port=443): Max retries exceeded"
    assert verdict(error, {"unresolved_hosts": ["codeload.github.com"]}) == (
        scope.NETWORK,
        "codeload.github.com (does not resolve here)",
    )
    # Nothing named in the error: the lookups the build recorded are the evidence.
    assert verdict(
        "URLError: <urlopen error [Errno -2] Name or service not known>",
        {"unresolved_hosts": ["raw.githubusercontent.com", "huggingface.co"]},
    ) == (scope.NETWORK, "raw.githubusercontent.com, huggingface.co (does not resolve here)")


def test_network_needs_evidence_and_a_network_kind_of_error():
    assert verdict("URLError: <urlopen error [Errno -2] Name or service not known>") is None
    # A host that resolves is no evidence.
    assert verdict("RuntimeError: fetching https://example.org/x failed") is None
    # A failed lookup on the way to one of our bugs does not excuse the bug.
    assert (
        verdict(
            "AttributeError: 'ServerClient' object has no attribute 'x'",
            {"unresolved_hosts": ["huggingface.co"]},
        )
        is None
    )


@pytest.mark.parametrize(
    "status_error",
    ["ValidationError: 2 validation errors for Config", "still in stage setup_webserver after 80s"],
)
def test_ordinary_failures_stay_in_scope(status_error):
    assert verdict(status_error) is None


def test_entrypoint_without_any_server_class():
    error = "LookupError: search.py defines no subclass of SimpleResourcesServer"
    detail = {"entrypoint": "search.py", "server_like_classes": []}
    assert verdict(error, detail) == (
        scope.ABSTRACT,
        "search.py defines no server class: a library other environments import",
    )
    # A server class that is not ours (an import mix-up) is our problem, not the environment's.
    assert verdict(error, {"entrypoint": "search.py", "server_like_classes": ["SearchServer"]}) is None
    assert verdict(error, {"entrypoint": "search.py"}) is None


def test_module_whose_requirement_needs_a_newer_python():
    install = {
        "status": "failed",
        "requirements": ["harbor>=0.22"],
        "error": "ERROR: Could not find a version that satisfies the requirement harbor>=0.22 (from versions: none) "
        "(its releases on the registry need a newer Python than this one)",
    }
    assert verdict("ModuleNotFoundError: No module named 'harbor'", install=install) == (
        scope.NOT_ON_REGISTRY,
        "'harbor' comes from harbor>=0.22, which has no release for this Python",
    )
    # Another module of the same environment is not excused by it.
    assert verdict("ModuleNotFoundError: No module named 'jinja2'", install=install) is None
    # Nor is a failure pip gave for any other reason.
    assert (
        verdict("ModuleNotFoundError: No module named 'harbor'", install={**install, "error": "ERROR: x"})
        is None
    )


def test_a_dataset_looked_for_on_the_hub():
    error = (
        "FileNotFoundError: Couldn't find any data file at /w/openai/gsm8k. Couldn't find 'openai/gsm8k' "
        "on the Hugging Face Hub either: LocalEntryNotFoundError: An error happened"
    )
    assert verdict(error, {"unresolved_hosts": ["huggingface.co"]}) == (
        scope.NETWORK,
        "huggingface.co (does not resolve here)",
    )
    # Without the failed lookup it is not excused, and nor is any other missing file.
    assert verdict(error) is None
    assert (
        verdict("FileNotFoundError: tasks directory does not exist", {"unresolved_hosts": ["huggingface.co"]})
        is None
    )


def test_a_setup_script_that_downloads(tmp_path: Path):
    script = tmp_path / "setup.sh"
    script.write_text('curl -L -O "https://github.com/org/tool/releases/latest/download/x.sh"\n')
    detail = {"traceback_tail": [f"    {script} [type=assertion_error, input_value=...]"]}
    error = "ValidationError: 1 validation error for Wrapper"
    detail["traceback_tail"].insert(0, f"  Assertion failed, Command failed: {script}")
    assert verdict(error, detail) == (
        scope.NETWORK,
        "setup.sh downloads from github.com (does not resolve here)",
    )
    script.write_text("echo local only\n")
    assert verdict(error, detail) is None
