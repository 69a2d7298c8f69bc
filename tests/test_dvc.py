"""DVC around the workflow (dvc.yaml, docs/dvc.md), run for real on the small configuration.

One scenario, run once for the module in a temporary copy of the repository (its own git repository,
with the committed .dvc/ and dvc.yaml), whose config/config.yaml is tests/workflow/config.yaml merged over
the demo's: `dvc repro`; a changed `selection.top_rate` and `dvc repro` again; `dvc push` to a folder
remote; `git clone` and `dvc pull` into a fresh clone, whose file times are then made arbitrary (every
prepared file newer than every result); `dvc repro` there; a changed `ablation.n_boot` there. The tests
read what the scenario recorded. Which stages ran is read from DVC's own lines (`Running stage 'x':`),
what they depend on from `dvc dag --dot`, and what changed from the files' hashes and times, so the
tests need no update when rules or job counts change.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = shutil.which("dvc", path=str(BIN)) or shutil.which("dvc")
SNAKEMAKE = shutil.which("snakemake", path=str(BIN)) or shutil.which("snakemake")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(DVC is None or SNAKEMAKE is None, reason="dvc or snakemake is not installed"),
]

# Laid over the small configuration: the ablation without its cross-domain condition and with one condition
# fewer (6 model runs instead of 12, twice: before and after the selection change), to keep the test to
# minutes; every kind of condition still runs (the baseline, a deactivation, its random control), and
# tests/test_workflow.py runs them all. Only the two synthetic domains: the small configuration's folder
# domain (its images made by tests/conftest.py) is the workflow test's, as are its external neuron sets;
# data.dvc has tests/test_data_dvc.py.
SMALLER = {"domains": ["ad", "rs"], "ablation": {"conditions": ["none", "all"], "cross_domain": []}}
NEW_TOP_RATE = 0.1
NEW_N_BOOT = 200
COUNTS = "results/demo/counts"


def merged(base, overlay):
    """`overlay` laid over `base` as Snakemake's --configfile does: mappings key by key, the rest replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


class Repo:
    """A checkout in which commands run with the venv first on PATH, and what they printed."""

    def __init__(self, path, env):
        self.path, self.env = path, env

    def run(self, *args, check=True):
        """(seconds, everything printed) of one command; a failure shows what it printed."""
        start = time.monotonic()
        result = subprocess.run(
            args, cwd=self.path, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        seconds = time.monotonic() - start
        if check:
            assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}"
        return seconds, result.stdout

    def dvc(self, *args, **kwargs):
        return self.run(DVC, *args, **kwargs)

    def git(self, *args):
        return self.run("git", *args)[1]

    def commit(self, message):
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)

    def repro(self):
        """(seconds, stages run, stages skipped) of one `dvc repro`."""
        seconds, printed = self.dvc("repro")
        ran = re.findall(r"^Running stage '([^']+)':$", printed, re.M)
        skipped = re.findall(r"^Stage '([^']+)' didn't change, skipping$", printed, re.M)
        return seconds, ran, skipped, printed

    def status(self):
        """`dvc status --json`: {stage: what changed}; {} when everything is up to date."""
        seconds, printed = self.dvc("status", "--json")
        return seconds, json.loads(printed)

    def config(self):
        return yaml.safe_load((self.path / "config/config.yaml").read_text())

    def set_config(self, values):
        (self.path / "config/config.yaml").write_text(yaml.safe_dump(merged(self.config(), values), sort_keys=False))

    def lock(self):
        return yaml.safe_load((self.path / "dvc.lock").read_text())["stages"]

    def files(self, *paths):
        """{file: (md5, mtime_ns)} of every file at or under `paths`."""
        found = {}
        for path in map(self.path.joinpath, paths):
            for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if file.is_file():
                    found[str(file.relative_to(self.path))] = (
                        hashlib.md5(file.read_bytes()).hexdigest(),
                        file.stat().st_mtime_ns,
                    )
        return found

    def outs(self, stage):
        """The paths a stage's outs are, from dvc.lock."""
        return [out["path"] for out in self.lock()[stage]["outs"]]


def stage_graph(repo):
    """{stage: the stages that depend on it, directly or not}, from `dvc dag --dot`."""
    printed = repo.dvc("dag", "--dot")[1]
    stages = set(re.findall(r'^"([^"]+)";$', printed, re.M))
    edges = re.findall(r'^"([^"]+)" -> "([^"]+)";$', printed, re.M)
    below = {stage: set() for stage in stages}
    changed = True
    while changed:
        changed = False
        for upstream, downstream in edges:
            new = {downstream} | below[downstream]
            if not new <= below[upstream]:
                below[upstream] |= new
                changed = True
    return below


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    base = tmp_path_factory.mktemp("dvc")
    # How jobs run is a Snakemake profile, outside the stages' cmd (dvc.yaml says why): one thread a job,
    # two jobs side by side on these 2 cores (a job at this size is mostly Python start-up).
    profile = base / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text("max-threads: 1\n")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "DVC_NO_ANALYTICS": "1",
        "SNAKEMAKE_PROFILE": str(profile),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    env.pop("PYTHONPATH", None)  # the rules put their checkout's mmneuron first; nothing else is needed
    record = {"times": {}}
    times = record["times"]

    # The copy: every file git would commit here (dvc.yaml, .dvc/, .dvcignore included), in a new repository.
    repo = Repo(base / "repo", env)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (repo.path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo.path / name)
    assert (repo.path / ".dvc/config").is_file() and (repo.path / "dvc.yaml").is_file()
    demo = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    small = yaml.safe_load((ROOT / "tests/workflow/config.yaml").read_text())
    config = merged(merged(demo, small), SMALLER)
    config["selection"]["external"] = {}  # the workflow test's (its file made by tests/conftest.py); a merge keeps keys
    (repo.path / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    repo.git("init", "-q")
    repo.commit("the small configuration")
    record["stages"] = set(stage_graph(repo))
    record["below"] = stage_graph(repo)

    # The first run: every stage.
    times["dvc repro (first, whole chain)"], record["first_ran"], _, _ = repo.repro()
    record["first_git_status"] = repo.git("status", "--porcelain")
    repo.commit("first run")
    record["first_lock"] = repo.lock()
    times["dvc status (up to date)"], record["status_unchanged"] = repo.status()
    times["dvc repro (no-op)"], record["noop_ran"], _, _ = repo.repro()
    times["snakemake --dry-run, whole workflow (no-op)"], record["snakemake_noop"] = repo.run(
        SNAKEMAKE, "--dry-run", "--quiet", "rules"
    )

    # A selection value changes.
    before = repo.files(*repo.outs("activations"), *repo.outs("data"), *repo.outs("model"), *repo.outs("lens"))
    neurons_before = repo.files(*repo.outs("neurons"))
    repo.set_config({"selection": {"top_rate": NEW_TOP_RATE}})
    _, record["status_changed"] = repo.status()
    times["dvc repro (top_rate changed)"], record["rerun_ran"], record["rerun_skipped"], _ = repo.repro()
    record["upstream_before"], record["upstream_after"] = before, repo.files(*before)
    record["neurons_before"], record["neurons_after"] = neurons_before, repo.files(*repo.outs("neurons"))
    record["lock"] = repo.lock()
    repo.commit("top_rate changed")

    # A remote in a folder; push.
    remote = base / "remote"
    repo.dvc("remote", "add", "-d", "local", str(remote))
    repo.commit("a local remote")
    times["dvc push"], _ = repo.dvc("push")

    # A fresh clone: pull, then make every prepared file newer than every result.
    clone = Repo(base / "clone", env)
    subprocess.run(["git", "clone", "-q", str(repo.path), str(clone.path)], check=True, env=env)
    times["dvc pull (fresh clone)"], _ = clone.dvc("pull")
    everything = [out for stage in record["stages"] for out in clone.outs(stage)]
    record["pulled"] = clone.files(*everything)
    record["neurons_pulled"] = clone.files(*clone.outs("neurons"))
    now = time.time()
    for path in record["pulled"]:
        stamp = now if path.startswith("data/") else now - 3600
        os.utime(clone.path / path, (stamp, stamp))
    # Snakemake alone would now rerun the chain from the data on: the trap the stages' --allowed-rules close.
    _, printed = clone.run(SNAKEMAKE, "--dry-run", "--quiet", "rules")
    planned = re.search(r"^total +(\d+)$", printed, re.M)
    record["snakemake_planned_in_clone"] = int(planned.group(1)) if planned else 0
    skewed = clone.files(*everything)
    _, record["clone_status"] = clone.status()
    times["dvc repro (fresh clone, no-op)"], record["clone_ran"], _, _ = clone.repro()
    record["clone_after_noop"] = clone.files(*everything)

    # A scoring value changes in the clone: the scores stage reruns, nothing upstream of it.
    clone.set_config({"ablation": {"n_boot": NEW_N_BOOT}})
    _, record["clone_status_n_boot"] = clone.status()
    times["dvc repro (fresh clone, n_boot changed)"], record["n_boot_ran"], _, _ = clone.repro()
    record["skewed"] = skewed
    record["after_n_boot"] = clone.files(*everything)
    record["scores_outs"] = clone.outs("scores")

    # Overhead: one stage's command run directly (its outs removed first, as DVC does), then the same
    # stage through `dvc repro --force --single-item`.
    cmd = clone.lock()["neurons"]["cmd"]
    for out in clone.outs("neurons"):
        path = clone.path / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    times["neurons stage: its snakemake command directly"], _ = clone.run("sh", "-c", cmd)
    times["neurons stage: dvc repro -f -s neurons"], _ = clone.dvc("repro", "--force", "--single-item", "neurons")
    record["neurons_after_forced"] = clone.files(*clone.outs("neurons"))

    print("\nDVC scenario timings (s):")
    for what, seconds in times.items():
        print(f"  {seconds:7.1f}  {what}")
    return record


def test_first_repro_runs_every_stage(scenario):
    assert sorted(scenario["first_ran"]) == sorted(scenario["stages"])
    for stage, entry in scenario["first_lock"].items():
        assert entry["outs"], stage
        assert all(out.get("md5") for out in entry["outs"]), stage


def test_first_repro_leaves_git_only_the_lock_to_commit(scenario):
    # every out lies in a git-ignored folder (data/, results/): DVC writes no .gitignore entries
    assert scenario["first_git_status"] == "?? dvc.lock\n"


def test_unchanged_repo_is_up_to_date(scenario):
    assert scenario["status_unchanged"] == {}
    assert scenario["noop_ran"] == []
    assert "Nothing to be done" in scenario["snakemake_noop"]


def test_changed_selection_reruns_the_neurons_and_what_depends_on_them(scenario):
    # `dvc status` names only the neurons stage (and the report, which shows the whole configuration), and the
    # changed value
    assert set(scenario["status_changed"]) == {"neurons", "report"}
    assert "selection.top_rate" in json.dumps(scenario["status_changed"]["neurons"])
    # the neuron sets changed (so the stages using them had to rerun)
    neurons = "results/demo/neurons.json"
    assert scenario["neurons_before"][neurons][0] != scenario["neurons_after"][neurons][0]
    below = scenario["below"]["neurons"]
    ran, skipped = set(scenario["rerun_ran"]), set(scenario["rerun_skipped"])
    assert "neurons" in ran
    assert ran <= {"neurons"} | below
    assert skipped == scenario["stages"] - ran
    # every stage reading the neuron sets ran; one further down ran only if its own inputs changed
    lock, first = scenario["lock"], scenario["first_lock"]
    for stage in below:
        deps = {dep["path"]: dep["md5"] for dep in lock[stage]["deps"]}
        if neurons in deps:
            assert stage in ran, stage
        if stage not in ran:
            assert deps == {dep["path"]: dep["md5"] for dep in first[stage]["deps"]}, stage


def test_changed_selection_leaves_the_counts_as_they_were(scenario):
    # the activation counts (and the data, the model and the lens) are the same files: same bytes, same times
    before, after = scenario["upstream_before"], scenario["upstream_after"]
    assert any(path.startswith(COUNTS + "/") for path in before)
    assert after == before


def test_lock_records_the_neuron_sets_and_the_changed_value(scenario):
    entry = scenario["lock"]["neurons"]
    assert entry["params"]["config/config.yaml"]["selection.top_rate"] == NEW_TOP_RATE
    recorded = {out["path"]: out["md5"] for out in entry["outs"]}
    assert recorded["results/demo/neurons.json"] == scenario["neurons_after"]["results/demo/neurons.json"][0]
    # the counts they were selected from, by hash
    assert {dep["path"] for dep in entry["deps"]} >= {COUNTS}


def test_push_and_pull_round_trip_the_neuron_sets(scenario):
    pulled = {path: md5 for path, (md5, _) in scenario["neurons_pulled"].items()}
    pushed = {path: md5 for path, (md5, _) in scenario["neurons_after"].items()}
    assert pulled == pushed
    assert "results/demo/neurons.json" in pulled and any(path.startswith("results/demo/lape/") for path in pulled)


def test_fresh_clone_reruns_nothing_despite_its_file_times(scenario):
    assert scenario["snakemake_planned_in_clone"] > 0  # Snakemake alone would rerun jobs there
    assert scenario["clone_status"] == {}
    assert scenario["clone_ran"] == []
    assert scenario["clone_after_noop"] == scenario["skewed"]


def test_changed_scoring_in_the_clone_reruns_only_the_scores(scenario):
    # (and the report, which shows the scores and the whole configuration)
    assert set(scenario["clone_status_n_boot"]) == {"scores", "report"}
    assert sorted(scenario["n_boot_ran"]) == ["report", "scores"]
    # every other file is as it was, although the data are newer than everything made from them
    scores = (*scenario["scores_outs"], "results/report.")
    untouched = {path: seen for path, seen in scenario["skewed"].items() if not path.startswith(scores)}
    assert {path: seen for path, seen in scenario["after_n_boot"].items() if path in untouched} == untouched
    assert scenario["after_n_boot"].keys() == scenario["skewed"].keys()


def test_a_forced_stage_gives_the_same_neuron_sets(scenario):
    # the selection is deterministic: its command run directly or through DVC writes the same bytes
    forced = {path: md5 for path, (md5, _) in scenario["neurons_after_forced"].items()}
    assert forced == {path: md5 for path, (md5, _) in scenario["neurons_pulled"].items()}
