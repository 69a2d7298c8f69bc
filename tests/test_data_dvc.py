"""data.dvc: a prepared data/ folder shared through DVC (docs/dvc.md, "Sharing the prepared data").

A team prepares once (`mmneuron prepare` jobs write data/), runs `dvc add data` and `dvc push`; a
colleague clones and runs `dvc pull data.dvc`. Checked offline with a local folder remote: git holds
only data.dvc (the samples stay ignored), the pulled files are the same bytes, and the workflow on
the pulled folder plans no prepare job (it does not prepare again what was pulled).
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ENV, ROOT, dry_run, job_stats
from PIL import Image

from mmneuron.data.samples import Sample, encode_png, read_samples, write_samples

BIN = Path(sys.executable).parent
DVC = shutil.which("dvc", path=str(BIN)) or shutil.which("dvc")
pytestmark = pytest.mark.skipif(DVC is None or shutil.which("git") is None, reason="dvc or git is not installed")
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
PREPARED = {"pets": {"stats": 5, "eval": 3}}


def run(*args, cwd):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**ENV, "DVC_NO_ANALYTICS": "1"})
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


def digests(folder: Path) -> dict:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def prepare(repo: Path) -> None:
    """A prepared data/ as `mmneuron prepare` leaves it: one samples file per domain and split."""
    rng = np.random.default_rng(0)
    for domain, splits in PREPARED.items():
        for split, n in splits.items():
            samples = [
                Sample(
                    f"{split}{i}",
                    domain,
                    "What colour is it?",
                    ["red"],
                    encode_png(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))),
                )
                for i in range(n)
            ]
            (repo / f"data/{domain}").mkdir(parents=True, exist_ok=True)
            write_samples(samples, repo / f"data/{domain}/{split}.parquet")


def test_prepared_data_round_trips_through_a_dvc_remote(tmp_path):
    repo, remote, clone = tmp_path / "team", tmp_path / "remote", tmp_path / "colleague"
    repo.mkdir()
    run(*GIT, "init", "-q", cwd=repo)
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")  # the project's: /data/ is ignored
    run(DVC, "init", "-q", cwd=repo)
    run(DVC, "config", "core.analytics", "false", cwd=repo)
    prepare(repo)
    run(DVC, "add", "data", cwd=repo)
    run(DVC, "remote", "add", "-d", "shared", str(remote), cwd=repo)
    run(DVC, "push", cwd=repo)
    run(*GIT, "add", "-A", cwd=repo)
    run(*GIT, "commit", "-q", "-m", "prepared data", cwd=repo)
    tracked = run(*GIT, "ls-files", cwd=repo).split()
    assert "data.dvc" in tracked and not any(path.startswith("data/") for path in tracked)
    assert yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["path"] == "data"

    run(*GIT, "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data").exists()
    run(DVC, "pull", "data.dvc", cwd=clone)
    assert digests(clone / "data") == digests(repo / "data")
    assert [s.sample_id for s in read_samples(clone / "data/pets/eval.parquet")] == ["eval0", "eval1", "eval2"]
    assert "up to date" in run(DVC, "status", "data.dvc", cwd=clone)

    # The workflow on the pulled folder: its samples are there, so no domain is prepared again.
    overlay = clone / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "domains": ["ad", "pets"],
                "data": {"sources": {"pets": {"source": "folder", "options": {"root": "raw/pets"}}}},
                "evaluation": {"metrics": {"pets": "exact_match"}},
            }
        )
    )
    os.utime(clone / "data/pets/stats.parquet")  # pulled files carry arbitrary times
    code, printed = dry_run("--configfile", str(overlay), cwd=clone)
    assert code == 0, printed
    planned = job_stats(printed)
    assert "prepare_domain" not in planned and planned["synthetic_domain"] == 1  # ad is still synthetic
