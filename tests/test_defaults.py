"""One source of defaults: config/schema.yaml's defaults equal mmneuron.defaults, and the command
line takes its defaults from there too."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from mmneuron import defaults
from mmneuron.cli import build_parser

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/schema.yaml").read_text())
# keys the schema has with no library counterpart: the domains and models a workflow analyses
WORKFLOW_ONLY = {"domains", "models"}


def _plain(value):
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _schema_defaults(properties: dict) -> dict:
    """The defaults of an object schema, nested objects by their own properties' defaults."""
    out = {}
    for key, spec in properties.items():
        if spec.get("type") == "object" and "properties" in spec:
            out[key] = _schema_defaults(spec["properties"])
        else:
            out[key] = spec["default"]
    return out


def test_top_level_defaults_are_the_run_defaults():
    top = {key: spec for key, spec in SCHEMA["properties"].items() if key not in defaults.SECTIONS}
    assert set(top) - WORKFLOW_ONLY == {field.name for field in dataclasses.fields(defaults.Run)}
    for key in set(top) - WORKFLOW_ONLY:
        assert top[key]["default"] == getattr(defaults.RUN, key), key


@pytest.mark.parametrize("section", sorted(defaults.SECTIONS))
def test_schema_defaults_equal_the_library_defaults(section):
    spec = SCHEMA["properties"][section]
    assert _schema_defaults(spec["properties"]) == {
        field.name: _plain(getattr(defaults.SECTIONS[section], field.name))
        for field in dataclasses.fields(defaults.SECTIONS[section])
    }


def test_model_entry_defaults_equal_the_library_defaults():
    entry = SCHEMA["properties"]["models"]["additionalProperties"]["properties"]
    assert {key: spec["default"] for key, spec in entry.items() if key != "path"} == _plain(defaults.MODEL)


def _option_defaults(command: str) -> dict:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    return {action.dest: action.default for action in subparsers.choices[command]._actions}


@pytest.mark.parametrize(
    "command, option, expected",
    [
        ("extract", "batch_size", defaults.EXTRACTION.batch_size),
        ("extract", "prompt", defaults.EXTRACTION.prompt),
        ("extract", "anyres_padding", defaults.EXTRACTION.anyres_padding),
        ("extract", "dtype", defaults.RUN.dtype),
        ("extract", "device_map", defaults.MODEL.device_map),
        ("ablate", "attn_implementation", defaults.MODEL.attn_implementation),
        ("perturb", "trust_remote_code", defaults.MODEL.trust_remote_code),
        ("select", "top_rate", defaults.SELECTION.top_rate),
        ("select", "match_sizes", defaults.SELECTION.match_sizes),
        ("sample-curve", "methods", defaults.SELECTION.methods),
        ("sample-curve", "seed", defaults.RUN.seed),
        ("lens", "batch_size", defaults.LENS.batch_size),
        ("lens", "min_rise", defaults.LENS.stages.min_rise),
        ("ablate", "max_new_tokens", defaults.ABLATION.max_new_tokens),
        ("ablate", "batch_size", defaults.ABLATION.batch_size),
        ("ablate", "chat", defaults.EVALUATION.chat),
        ("ablate", "prompt", defaults.EVALUATION.prompts["default"]),
        ("perturb", "batch_size", defaults.PERTURBATION.batch_size),
        ("score", "n_boot", defaults.ABLATION.n_boot),
        ("train-demo", "steps", defaults.DEMO_MODEL.steps),
    ],
)
def test_the_command_line_takes_its_defaults_from_there(command, option, expected):
    assert _option_defaults(command)[option] == expected


def test_the_conda_environment_pins_the_runtime_dependencies_as_the_lock_does():
    """envs/mmneuron.yaml lists every runtime dependency of pyproject.toml at requirements.lock's version."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    lock = dict(line.lower().split("==") for line in (root / "requirements.lock").read_text().split())
    env = yaml.safe_load((root / "envs/mmneuron.yaml").read_text())
    pins = dict(entry.lower().split("==") for entry in env["dependencies"][-1]["pip"])
    runtime = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() for requirement in runtime}
    assert set(pins) == names
    assert pins == {name: lock[name] for name in names}
