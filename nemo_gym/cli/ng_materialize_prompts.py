"""`ng_materialize_prompts +input_jsonl_fpath=raw.jsonl +prompt_config=prompt.yaml +output_jsonl_fpath=out.jsonl`.

NeMo Gym's `gym dataset render`: a prompt config's templates filled in from each raw row's fields,
written as `responses_create_params.input`, so the rows run as they are. A row that already has an
input, a template field a row lacks or an invalid prompt file is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import CommandKeys, read_keys
from nemo_gym.config import ConfigError
from nemo_gym.prompt import PromptConfigError, materialize_prompts

COMMAND = "ng_materialize_prompts"
SUMMARY = "fill a prompt config's templates from raw rows into responses_create_params.input."


class MaterializePromptsKeys(CommandKeys):
    """ng_materialize_prompts' keys (NeMo Gym's names)."""

    input_jsonl_fpath: str = Field(description="Raw rows, without responses_create_params.input.")
    prompt_config: str = Field(description="The prompt YAML (`user`, optional `system`).")
    output_jsonl_fpath: str = Field(description="Where the rendered rows go.")


KEYS = MaterializePromptsKeys


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, MaterializePromptsKeys, args, config_names=False)
    if not Path(keys.input_jsonl_fpath).is_file():
        raise ConfigError(f"file {keys.input_jsonl_fpath} does not exist", key="input_jsonl_fpath")
    try:
        materialize_prompts(keys.input_jsonl_fpath, keys.prompt_config, keys.output_jsonl_fpath)
    except PromptConfigError as exc:
        raise ConfigError(str(exc), key="prompt_config") from None
    except (ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ConfigError(str(message), key="input_jsonl_fpath") from None
    return 0


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
