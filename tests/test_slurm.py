"""The workflow on a real SLURM scheduler: the small run (tests/workflow/config.yaml) through
`--workflow-profile profiles/slurm` on a single-node cluster started for the test (tests/slurm_cluster.py)
gives exactly the local run's results, every job ran as a SLURM job, and only model-running jobs asked SLURM
for a GPU.

The SLURM run sets `gpu: true` (the node has fake GPUs) and keeps `device: cpu`, so the model jobs compute
on the CPU like the local run's while SLURM allocates them a GPU. The local overrides are what a user sets
too: the partition (from `sinfo`) and the memory per job through the profile's environment variables, and
`--cores 2 --max-threads 1` as in the local run (one thread per job: the same arithmetic). The jobs run in
the test's Python environment, as the profile does without `--sdm conda`.

Which jobs ran where is read from what Snakemake printed (`Job N has been submitted with SLURM jobid M`,
`Finished jobid: N (Rule: R)`, the job blocks' resources and shell commands) and from the controller
(`scontrol show job`: state, exit code, partition, GPUs per job, log file); no job count or rule name is
assumed beyond the `all` target, which runs no command and so stays on the submit host.
"""

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import slurm_cluster
from conftest import ENV, ROOT, SMALL_CONFIG, SMALL_RUN_CORES, SNAKEMAKE, snakemake, write_user_inputs
from safetensors import safe_open

pytestmark = [pytest.mark.slow, pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")]

PROFILE = ROOT / "profiles/slurm"
# a hung run (say, job states asked of `sacct` without accounting) fails here instead of waiting forever
SLURM_RUN_TIMEOUT = 1200
FAKE_GPUS = 2  # two GPU jobs side by side, as the local run runs two jobs
# the outputs compared byte for byte (besides every table and record under results/, below)
RESULTS = ("results/demo/neurons.json", "results/demo/ablation/scores.csv", "results/demo/ablation/scores_random.csv")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A single-node SLURM cluster with fake GPUs, stopped (its daemons by pid) when the module is done,
    whatever happened; skipped with the reason where SLURM cannot be had (not root, no apt-get, ...)."""
    start = time.monotonic()
    try:
        slurm_cluster.install()
        installed = time.monotonic() - start
        cluster = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"), gpus=FAKE_GPUS).start()
    except slurm_cluster.Unavailable as reason:
        pytest.skip(f"no SLURM test cluster here: {reason}")
    cluster.install_seconds = installed
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def slurm_run(cluster, finished_run, tmp_path_factory):
    """The small workflow through SLURM (after the local run, `finished_run`, so that the two do not share
    the cores): its folder, everything Snakemake printed, its wall time, and the controller's jobs."""
    workdir = tmp_path_factory.mktemp("workflow-slurm")
    write_user_inputs(workdir)
    partition = cluster.run("sinfo", "--noheader", "--format=%P").stdout.split()[0].rstrip("*")
    env = {
        **ENV,
        "SLURM_CONF": str(cluster.conf),
        "MMNEURON_SLURM_PARTITION": partition,
        "MMNEURON_SLURM_MEM_MB": "2000",
    }
    start = time.monotonic()
    code, printed = snakemake(
        "--workflow-profile",
        str(PROFILE),
        "--configfile",
        str(SMALL_CONFIG),
        "--config",
        "gpu=True",
        *SMALL_RUN_CORES,
        "--slurm-keep-successful-logs",  # the plugin deletes a successful job's log otherwise
        # the local cluster answers at once: check job states 2 s after a submission, not the profile's 10
        "--slurm-init-seconds-before-status-checks",
        "2",
        cwd=workdir,
        env=env,
        timeout=SLURM_RUN_TIMEOUT,
    )
    seconds = time.monotonic() - start
    assert code == 0, f"{printed}\n{cluster.logs()}"
    return workdir, printed, seconds, cluster.jobs(), partition


def submitted(printed):
    """{Snakemake job id: SLURM job id} of every job the executor submitted."""
    return dict(re.findall(r"^Job (\S+) has been submitted with SLURM jobid (\d+)", printed, re.M))


def finished(printed):
    """{Snakemake job id: rule} of every job the run finished."""
    return dict(re.findall(r"^Finished jobid: (\S+) \(Rule: (\w+)\)$", printed, re.M))


def job_blocks(printed):
    """{Snakemake job id: (its resources line, its shell command)} from the blocks printed per job."""
    blocks = {}
    for block in re.split(r"^(?:local)?rule \w+:$", printed, flags=re.M)[1:]:
        jobid = re.search(r"^ +jobid: (\S+)$", block, re.M)
        resources = re.search(r"^ +resources: (.*)$", block, re.M)
        shell = block.partition("\nShell command: ")[2]  # to the block's end: a command may span lines
        if jobid:
            blocks[jobid.group(1)] = (resources.group(1) if resources else "", shell)
    return blocks


def test_every_job_ran_as_a_slurm_job(slurm_run, finished_run, cluster):
    workdir, printed, seconds, jobs, partition = slurm_run
    local_seconds = finished_run[3]
    print(
        f"SLURM: apt-get {cluster.install_seconds:.0f} s, cluster start {cluster.start_seconds:.1f} s;"
        f" small workflow {len(jobs)} SLURM jobs in {seconds:.0f} s (locally {local_seconds:.0f} s)"
    )
    sent, done = submitted(printed), finished(printed)
    # the same jobs as the local run, and all but the `all` target (no command) went to SLURM
    assert Counter(done.values()) == Counter(finished_run[2])
    assert {rule for jobid, rule in done.items() if jobid not in sent} == {"all"}
    assert set(sent) <= set(done)
    # the controller knows exactly those jobs (the cluster is this module's), each finished well, in the partition
    assert set(jobs) == set(sent.values())
    for slurm_id, job in jobs.items():
        assert (job["JobState"], job["ExitCode"], job["Partition"]) == ("COMPLETED", "0:0", partition), job
        # the plugin's log of the job: the job step's Snakemake ran the one job inside the allocation
        log = Path(job["StdOut"])
        assert log.is_relative_to(workdir / ".snakemake/slurm_logs") and log.name == f"{slurm_id}.log", job
        text = log.read_text()
        assert "--executor slurm-jobstep" in text and "1 of 1 steps (100%) done" in text, text


def test_only_model_jobs_get_a_gpu(slurm_run):
    printed, jobs = slurm_run[1], slurm_run[3]
    blocks = job_blocks(printed)
    kinds = Counter()
    for jobid, slurm_id in submitted(printed).items():
        resources, shell = blocks[jobid]
        model = "--device" in shell  # every model-running command takes the device, no other does
        asked = re.search(r"\bgpu=1\b", resources) is not None
        assert asked == model, (resources, shell)
        # what SLURM allocated: `--gpus=1` shows as one GPU per job
        assert (jobs[slurm_id].get("TresPerJob") == "gres:gpu:1") == model, jobs[slurm_id]
        kinds[model] += 1
    assert kinds[True] and kinds[False], kinds  # both kinds ran


def files(workdir, *patterns):
    """The files under `workdir`/results matching any of `patterns`, relative to `workdir`, sorted."""
    return sorted({path.relative_to(workdir) for pattern in patterns for path in (workdir / "results").rglob(pattern)})


def tensors(path):
    with safe_open(path, framework="pt") as handle:
        return handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def test_results_equal_the_local_run(slurm_run, finished_run):
    local, remote = finished_run[0], slurm_run[0]
    for name in RESULTS:
        assert (remote / name).read_bytes() == (local / name).read_bytes(), name
    # every table and record, including the answers behind the scores
    records = files(local, "*.csv", "*.json", "*.jsonl")
    assert files(remote, "*.csv", "*.json", "*.jsonl") == records
    for name in records:
        if name.name == "accuracy.json":  # the demo model's report holds its training time, a measurement
            remote_report, local_report = (json.loads((root / name).read_text()) for root in (remote, local))
            assert remote_report.pop("train_seconds") >= 0 and local_report.pop("train_seconds") >= 0
            assert remote_report == local_report, name
            continue
        assert (remote / name).read_bytes() == (local / name).read_bytes(), name
    # the activation counts, shards included: the same tensors, exactly
    counts = [name for name in files(local, "*.safetensors") if "counts" in name.parts]
    assert counts and files(remote, "*.safetensors") == files(local, "*.safetensors")
    for name in counts:
        (local_meta, local_tensors), (remote_meta, remote_tensors) = tensors(local / name), tensors(remote / name)
        assert remote_meta == local_meta, name
        assert remote_tensors.keys() == local_tensors.keys(), name
        for key, tensor in local_tensors.items():
            assert remote_tensors[key].dtype == tensor.dtype and remote_tensors[key].equal(tensor), (name, key)
