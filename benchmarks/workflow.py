"""The whole small workflow (benchmarks/workflow.yaml): wall time cold, warm and with nothing to do.

    python -m benchmarks.workflow --repeats 2

- cold: the first run, in a fresh folder, of a fresh process tree (Python's bytecode of the
  packages is compiled already; the OS file cache holds whatever it holds);
- warm: the same run again in another fresh folder, right after (file cache and bytecode warm);
- no-op: Snakemake run again in a finished folder, finding nothing to do (the DAG's cost).

Each run is `snakemake --cores C --max-threads 1` as the tests run it; the table gives the median
and the spread over the repeats (cold is measured once: it is cold only once) and the jobs run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).with_name("workflow.yaml")


def run(folder: Path, cores: int) -> tuple[float, int]:
    """Wall seconds and finished jobs of one `snakemake` run in ``folder``."""
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    command = [snakemake, "--directory", str(folder), "--snakefile", str(ROOT / "Snakefile")]
    command += ["--configfile", str(CONFIG), "--cores", str(cores), "--max-threads", "1"]
    env_path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PATH": env_path})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"benchmarks.workflow: snakemake failed in {folder}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    jobs = len(re.findall(r"^Finished jobid: \d+", result.stdout + result.stderr, re.M))
    return seconds, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="warm and no-op runs (default %(default)s)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default %(default)s)")
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"cold": [], "warm": [], "no-op": []}
    jobs: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="mmneuron-bench-") as scratch:
        for number in range(1 + args.repeats):
            folder = Path(scratch) / f"run{number}"
            folder.mkdir()
            kind = "cold" if number == 0 else "warm"
            seconds, jobs[kind] = run(folder, args.cores)
            times[kind].append(seconds)
            if number:
                seconds, jobs["no-op"] = run(folder, args.cores)
                times["no-op"].append(seconds)
            if number < args.repeats:  # keep the disk small; the last folder goes with the scratch one
                shutil.rmtree(folder)
    rows = []
    for kind, values in times.items():
        stats = common.summary(values)
        rows.append(
            {
                "run": kind,
                "jobs": jobs[kind],
                "median s": stats["median"],
                "min s": stats["min"],
                "max s": stats["max"],
                "repeats": stats["n"],
            }
        )
    setting = {"config": "benchmarks/workflow.yaml", "cores": args.cores}
    common.report("workflow", setting, rows, torch.device("cpu"), args.results)


if __name__ == "__main__":
    main()
