"""The Snakemake workflow: the default config validates and plans the whole chain; bad values fail early."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")
pytestmark = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")


def dry_run(*extra, cwd=ROOT):
    """Snakemake's return code and everything it printed (it reports errors on either stream)."""
    result = subprocess.run(
        [
            SNAKEMAKE,
            "--dry-run",
            "--quiet",
            "rules",
            "--cores",
            "1",
            "--directory",
            str(cwd),
            "--snakefile",
            str(ROOT / "Snakefile"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return result.returncode, result.stdout


def test_default_config_plans_every_stage(tmp_path):
    code, planned = dry_run(cwd=tmp_path)
    assert code == 0, planned
    for rule in (
        "synthetic_domain",
        "contact_sheet",
        "train_demo_model",
        "activation_counts",
        "select_neurons",
        "logit_lens",
        "ablate",
        "score_ablation",
    ):
        assert rule in planned


@pytest.mark.parametrize("override, key", [("seed=-1", "seed"), ("device=gpu0", "device"), ("domains=[ad]", "domains")])
def test_invalid_values_fail_before_any_job_naming_the_key(tmp_path, override, key):
    code, printed = dry_run("--config", override, cwd=tmp_path)
    assert code != 0
    assert "Error validating config" in printed
    assert f"On instance['{key}']" in printed  # jsonschema names the offending key
    assert not (tmp_path / "data").exists()


def test_unknown_key_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text((ROOT / "config/config.yaml").read_text() + "\ndemo_model_typo: {steps: 3}\n")
    code, printed = dry_run("--configfile", str(config), cwd=tmp_path)
    assert code != 0
    assert "demo_model_typo" in printed


def test_cli_lists_every_stage():
    result = subprocess.run([sys.executable, "-m", "mmneuron", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("make-data", "train-demo", "extract", "merge", "select", "lens", "ablate", "score"):
        assert command in result.stdout
