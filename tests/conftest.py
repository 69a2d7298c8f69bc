"""What the workflow tests share: Snakemake command lines for this workflow, and the small real run
(tests/workflow/config.yaml), done once per session for the tests that read it (tests/test_workflow.py: what
a config change reruns; tests/test_slurm.py: the same run through SLURM gives the same results)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL_CONFIG = ROOT / "tests/workflow/config.yaml"
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")

# The jobs' `python` is the one running the tests (its folder first on PATH), as with the venv activated.
ENV = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def command(*args, cwd):
    """A snakemake command line for this workflow, with `cwd` as its working directory."""
    return [SNAKEMAKE, "--directory", str(cwd), "--snakefile", str(ROOT / "Snakefile"), *args]


def snakemake(*args, cwd, env=None, timeout=None):
    """Snakemake's return code and everything it printed (it reports errors on either stream); after
    `timeout` seconds it is killed, and the code is None."""
    try:
        result = subprocess.run(
            command(*args, cwd=cwd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env or ENV,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as killed:
        printed = killed.output.decode(errors="replace") if isinstance(killed.output, bytes) else killed.output
        return None, f"{printed or ''}\n(killed after {timeout} s)"
    return result.returncode, result.stdout


def dry_run(*extra, cwd=ROOT):
    return snakemake("--dry-run", "--quiet", "rules", "--cores", "1", *extra, cwd=cwd)


def job_stats(printed):
    """{rule: jobs} from the first `Job stats:` table Snakemake printed ({} when nothing is planned)."""
    match = re.search(r"^Job stats:\njob +count\n[- ]+\n(.*?)^total +\d+$", printed, re.M | re.S)
    if match is None:
        assert "Nothing to be done" in printed, printed
        return {}
    return {rule: int(count) for rule, count in (line.split() for line in match.group(1).splitlines())}


# The small real run, once for the session.

# --max-threads 1: at this size a job is mostly Python start-up (about 12 s of imports on one core), so two
# jobs side by side beat one job on two threads (measured: 4 minutes against 7). The SLURM run uses it too:
# the same threads per job, so the same arithmetic.
SMALL_RUN_CORES = ("--cores", "2", "--max-threads", "1")


# The small run's own domain `pets` (tests/workflow/config.yaml: the `folder` source): a folder of images and
# a JSONL of questions per split, as a user would bring them. Some words are unknown to the demo model's
# tokenizer (`puppy`, `kitten`): they go in as <unk> and are counted.
PETS = {"stats": 8, "eval": 6}
PET_COLOURS = {"red": (200, 30, 30), "green": (30, 170, 40), "blue": (30, 40, 200), "yellow": (220, 210, 40)}


def write_pets_folder(workdir: Path) -> None:
    from PIL import Image

    images = workdir / "pets/images"
    images.mkdir(parents=True)
    colours = list(PET_COLOURS)
    for split, n in PETS.items():
        rows = []
        for index in range(n):
            colour = colours[index % len(colours)]
            name = f"{split}_{index}.png"
            Image.new("RGB", (48 + 8 * index, 48), PET_COLOURS[colour]).save(images / name)
            animal = "puppy" if index % 2 else "kitten"
            rows.append({"image": name, "question": f"What colour is the {animal}?", "answer": colour})
        (workdir / f"pets/{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


# A LAPE-format file of neuron sets for the demo model's language model (DemoSize: 4 layers x 192), as
# `selection.external` in tests/workflow/config.yaml names it: `few` holds some neurons, `empty` none.
LAPE_SETS = {"few": {1: [0, 5, 17], 2: [3, 191]}, "empty": {}}


def write_user_inputs(workdir: Path) -> None:
    """What a user brings to the small run: the pets folder and the external neuron sets."""
    import torch

    from mmneuron.models.demo import DemoSize

    write_pets_folder(workdir)
    layers = DemoSize().text_layers
    sets = [
        [torch.tensor(chosen.get(layer, []), dtype=torch.long) for layer in range(layers)]
        for chosen in LAPE_SETS.values()
    ]
    (workdir / "external").mkdir()
    torch.save(sets, workdir / "external/lang.pt")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """The whole workflow run for real on tests/workflow/config.yaml: its folder, the jobs the dry run
    planned beforehand, the jobs it finished, and its wall time."""
    if SNAKEMAKE is None:
        pytest.skip("snakemake is not installed")
    workdir = tmp_path_factory.mktemp("workflow")
    write_user_inputs(workdir)
    config = ("--configfile", str(SMALL_CONFIG))
    code, printed = dry_run(*config, cwd=workdir)
    assert code == 0, printed
    planned = job_stats(printed)
    start = time.monotonic()
    code, printed = snakemake(*SMALL_RUN_CORES, *config, cwd=workdir)
    seconds = time.monotonic() - start
    assert code == 0, printed
    finished = Counter(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", printed, re.M))
    return workdir, planned, finished, seconds
