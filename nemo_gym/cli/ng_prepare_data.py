"""`ng_prepare_data "+config_paths=[...]" +mode=example_validation +output_dirpath=data/out`.

NeMo Gym's data preparation (`gym dataset collate`): every dataset the config's agents and
resources servers declare for the mode is checked row by row (a bad row stops it, naming file and
line) and collated into `<output_dirpath>/<type>.jsonl` with `<type>_metrics.json`. The model
endpoint is not needed. Downloading missing datasets from a hub is not done here: a missing file
is an error naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from omegaconf import OmegaConf
from pydantic import Field

from nemo_gym.cli.common import command_entry
from nemo_gym.cli.keys import ConfigCommandKeys, read_keys
from nemo_gym.cli.ng_validate import MODEL_STAND_INS
from nemo_gym.config import ConfigError, load_config
from nemo_gym.datasets.collate import TYPES_BY_MODE, collate, declared_datasets

COMMAND = "ng_prepare_data"
SUMMARY = "check the datasets a config declares and collate them per type, with metrics."


class PrepareDataKeys(ConfigCommandKeys):
    """ng_prepare_data's keys (NeMo Gym's names)."""

    output_dirpath: str = Field(description="Where <type>.jsonl and <type>_metrics.json go.")
    mode: Literal["train_preparation", "example_validation"] = Field(
        description="example_validation: the example datasets; train_preparation: train, validation and "
        "benchmark."
    )
    should_download: bool = Field(
        False, description="Download missing datasets from a hub: not supported here (an error says so)."
    )


KEYS = PrepareDataKeys


def main(args: list[str]) -> int:
    keys = read_keys(COMMAND, PrepareDataKeys, args)
    loaded = load_config(args, initial=MODEL_STAND_INS)
    config = OmegaConf.to_container(loaded.config, resolve=True)
    assert isinstance(config, dict)
    types = TYPES_BY_MODE[keys.mode]
    declared = declared_datasets(config, types, loaded.source_of)
    if not declared:
        raise ConfigError(
            f"the config declares no {' / '.join(types)} dataset (`datasets:` in an agent or resources server block)",
            key="mode",
            source="command line",
        )
    missing = [d for d in declared if not d.path.is_file()]
    if missing:
        listed = ", ".join(f"{d.instance}: {d.dataset.name} ({d.dataset.jsonl_fpath})" for d in missing)
        how = (
            "downloading from a hub is not done here; fetch the files (e.g. with huggingface-cli) to those paths"
            if keys.should_download
            else "put the files at those paths"
        )
        raise ConfigError(f"missing datasets: {listed}; {how}", key="datasets", source="config")
    for item in declared:
        agent = item.agent or "no single agent (rows need their own agent_ref)"
        print(
            f"{item.instance}: {item.dataset.name} ({item.dataset.type}, x{item.dataset.num_repeats}) -> {agent}"
        )
    results = collate(declared, Path(keys.output_dirpath))
    for kind, (path, metrics) in results.items():
        print(
            f"{kind}: {metrics['number_of_examples']} rows -> {path} (metrics: {path.with_name(f'{kind}_metrics.json')})"
        )
    return 0


cli = command_entry(main, command=COMMAND, summary=SUMMARY, keys=KEYS)


if __name__ == "__main__":
    cli()
