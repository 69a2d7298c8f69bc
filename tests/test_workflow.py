"""The Snakemake workflow: the default config validates and plans the whole chain; bad values fail early;
a small real run (tests/workflow/config.yaml) runs every rule, and a config change reruns exactly the jobs
that use the changed value and those downstream of them.

How the reruns are read: the dry run's job-stats table (`--dry-run --quiet rules`: one `rule count` line
per planned rule) says which jobs Snakemake would run, and `--summary` (a tab-separated table with a
header: output file, date, rule, log, status, plan) says why, per output file: `params changed` marks the
jobs whose own recorded params differ, as opposed to jobs planned only because something upstream reruns
(status `ok`, plan `update pending`). Both are summaries Snakemake prints for people and scripts alike,
so no free-text `reason:` line is parsed; only the resources and commands of the default config's jobs
are read from the dry run's per-job blocks.
"""

import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ENV, PETS, ROOT, SMALL_CONFIG, SNAKEMAKE, command, dry_run, job_stats, snakemake

pytestmark = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")

# The rules whose commands run a model (they take --device and --dtype, and ask for a GPU when `gpu: true`).
MODEL_RULES = {"activation_counts_shard", "logit_lens", "ablate", "perturbation"}


def summary(*extra, cwd):
    """`snakemake --summary` as rows (dicts keyed by its header); it plans like a dry run and runs nothing."""
    result = subprocess.run(
        command("--summary", "--cores", "1", *extra, cwd=cwd),
        capture_output=True,  # the table on stdout, Snakemake's notes on stderr
        text=True,
        env=ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["output_file", "date", "rule", "log-file(s)", "status", "plan"], header
    return [dict(zip(header.split("\t"), row.split("\t"))) for row in rows]


def planned_jobs(printed):
    """(rule, block text) of every job a dry run prints (without `--quiet rules`), in order."""
    parts = re.split(r"^(?:local)?rule (\w+):$", printed, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


# Dry runs of the default config.


def test_default_config_plans_every_stage(tmp_path):
    code, planned = dry_run(cwd=tmp_path)
    assert code == 0, planned
    assert set(job_stats(planned)) == {
        "synthetic_domain",
        "contact_sheet",
        "demo_model",
        "activation_counts_shard",
        "activation_counts_half",
        "activation_counts",
        "select_neurons",
        "select_method",
        "method_overlaps",
        "sample_curve",
        "logit_lens",
        "ablate",
        "ablation_answers",
        "score_ablation",
        "perturbation",
        "report",
        "all",
    }


@pytest.mark.parametrize("gpu", [False, True])
def test_model_jobs_take_device_dtype_and_a_gpu_only_when_asked(tmp_path, gpu):
    code, printed = snakemake(
        "--dry-run", "--printshellcmds", "--cores", "2", "--config", f"gpu={gpu}", "dtype=float16", cwd=tmp_path
    )
    assert code == 0, printed
    jobs = planned_jobs(printed)
    assert {rule for rule, _ in jobs} >= MODEL_RULES
    for rule, block in jobs:
        resources = re.search(r"^ +resources: (.*)$", block, re.M)
        gpus = re.search(r"\bgpu=(\d+)", resources.group(1)) if resources else None
        asked = int(gpus.group(1)) if gpus else 0
        if rule in MODEL_RULES:
            assert asked == int(gpu), (rule, block)
            assert "--dtype float16" in block and "--device auto" in block, (rule, block)
        else:
            assert asked == 0, (rule, block)
            assert "--dtype" not in block, (rule, block)


def test_a_domain_with_a_source_is_prepared_per_split_in_place_of_the_synthetic_data(tmp_path):
    (tmp_path / "overlay.yaml").write_text(
        yaml.safe_dump(
            {
                "domains": ["ad", "com", "pets"],
                "data": {
                    "sizes": {"stats": 30, "eval": 12},
                    "sources": {
                        "com": {"source": "vqav2", "options": {"root": "/data/coco", "mirror": True, "split": None}},
                        "pets": {"source": "folder", "options": {"root": "pets", "questions": "pets/{split}.csv"}},
                    },
                },
                "demo_model": {"train": True},
                "extraction": {"max_bad_share": 0.1},
                "evaluation": {"metrics": {"pets": "exact_match"}},
            },
            sort_keys=False,  # the options go on the command line in the config's order
        )
    )
    code, printed = snakemake(
        "--dry-run", "--printshellcmds", "--cores", "2", "--configfile", str(tmp_path / "overlay.yaml"), cwd=tmp_path
    )
    assert code == 0, printed
    jobs = planned_jobs(printed)
    synthetic = [block for rule, block in jobs if rule == "synthetic_domain"]
    assert len(synthetic) == 1 and "--domain ad" in synthetic[0]
    prepared = sorted(
        block.split("mmneuron prepare", 1)[1].split(">")[0] for rule, block in jobs if rule == "prepare_domain"
    )
    assert [" ".join(command.split()) for command in prepared] == [
        "folder --split eval --domain pets --n 12 --seed 0 --max-bad-share 0.1 --root pets --questions pets/eval.csv"
        " --out data/pets/eval.parquet",
        "folder --split stats --domain pets --n 30 --seed 0 --max-bad-share 0.1 --root pets --questions pets/stats.csv"
        " --out data/pets/stats.parquet",
        "vqav2 --split eval --domain com --n 12 --seed 0 --max-bad-share 0.1 --root /data/coco --mirror"
        " --out data/com/eval.parquet",
        "vqav2 --split stats --domain com --n 30 --seed 0 --max-bad-share 0.1 --root /data/coco --mirror"
        " --out data/com/stats.parquet",
    ]
    (train,) = [block for rule, block in jobs if rule == "demo_model"]
    assert "data/ad/train.parquet" in train and "data/com/train.parquet" not in train  # synthetic domains only


PAPER_MODELS = {
    "llava_next_7b": "llava-hf/llava-v1.6-vicuna-7b-hf",
    "instructblip_7b": "Salesforce/instructblip-vicuna-7b",
}
PAPER_DOMAINS = ("ad", "med", "rs", "com", "doc")


def test_paper_config_plans_every_stage_for_both_models_and_all_five_domains(tmp_path):
    # no data, no weights: everything the run reads is made by a rule (prepare, then the stages)
    code, printed = snakemake(
        "--dry-run", "--printshellcmds", "--cores", "4", "--configfile", str(ROOT / "config/paper.yaml"), cwd=tmp_path
    )
    assert code == 0, printed
    jobs = planned_jobs(printed)
    outputs = {rule: " ".join(block for name, block in jobs if name == rule) for rule, _ in jobs}
    assert "demo_model" not in outputs and "synthetic_domain" not in outputs
    for domain in PAPER_DOMAINS:
        for split in ("stats", "eval"):
            assert f"data/{domain}/{split}.parquet" in outputs["prepare_domain"], (domain, split)
    for model, path in PAPER_MODELS.items():
        assert f"--model {path}" in outputs["activation_counts_shard"]
        for rule, target in [
            ("activation_counts", "results/{model}/counts/{domain}.safetensors"),
            ("ablation_answers", "results/{model}/ablation/answers/dape/{domain}"),
        ]:
            for domain in PAPER_DOMAINS:
                assert target.format(model=model, domain=domain) in outputs[rule], (rule, model, domain)
        for rule, target in [
            ("select_neurons", "neurons.json"),
            ("logit_lens", "lens/lens.csv"),
            ("score_ablation", "ablation/scores.csv"),
            ("perturbation", "perturbation/perturbation.csv"),
        ]:
            assert f"results/{model}/{target}" in outputs[rule], (rule, model)
    assert "results/report.html" in outputs["report"]
    ablate = {
        model: [block for rule, block in jobs if rule == "ablate" and f"--name {model}" in block]
        for model in PAPER_MODELS
    }
    blip, llava = " ".join(ablate["instructblip_7b"]), " ".join(ablate["llava_next_7b"])
    assert "vision+qformer+query/own" in blip and "projector/own" in llava and "qformer" not in llava  # own conditions
    assert all("--no-chat" in block for block in ablate["instructblip_7b"])  # no chat template
    assert all("--no-chat" not in block and "--chat" in block for block in ablate["llava_next_7b"])


def test_a_domain_neither_synthetic_nor_sourced_is_refused(tmp_path):
    code, printed = dry_run("--config", "domains=[ad,pets]", cwd=tmp_path)
    assert code != 0
    assert "domains ['pets'] have no entry in data.sources" in printed


def test_model_jobs_take_the_models_loading_options(tmp_path):
    (tmp_path / "overlay.yaml").write_text(
        "models: {demo: {path: results/models/demo, dtype: float16, device_map: auto,"
        " attn_implementation: eager, trust_remote_code: true}}\n"
    )
    code, printed = snakemake(
        "--dry-run", "--printshellcmds", "--cores", "2", "--configfile", str(tmp_path / "overlay.yaml"), cwd=tmp_path
    )
    assert code == 0, printed
    for rule, block in planned_jobs(printed):
        loading = ("--dtype float16", "--device-map auto", "--attn-implementation eager", "--trust-remote-code")
        assert all((flag in block) == (rule in MODEL_RULES) for flag in loading), (rule, block)


@pytest.mark.parametrize("train", [False, True])
def test_the_demo_model_is_the_shipped_one_unless_training_is_asked(tmp_path, train):
    (tmp_path / "overlay.yaml").write_text(f"demo_model: {{train: {str(train).lower()}}}\n")
    code, printed = snakemake(
        "--dry-run", "--printshellcmds", "--cores", "2", "--configfile", str(tmp_path / "overlay.yaml"), cwd=tmp_path
    )
    assert code == 0, printed
    (block,) = [block for rule, block in planned_jobs(printed) if rule == "demo_model"]
    assert ("mmneuron train-demo" in block) == train and ("mmneuron install-model" in block) != train, block
    assert ("train.parquet" in block) == train and ("models/demo/SHA256SUMS" in block) != train, block


def test_extraction_and_scoring_take_the_new_options(tmp_path):
    (tmp_path / "overlay.yaml").write_text("extraction: {anyres_padding: count}\nevaluation: {breakdown: {ad: kind}}\n")
    code, printed = snakemake(
        "--dry-run", "--printshellcmds", "--cores", "2", "--configfile", str(tmp_path / "overlay.yaml"), cwd=tmp_path
    )
    assert code == 0, printed
    jobs = planned_jobs(printed)
    for rule, block in jobs:
        assert ("--anyres-padding count" in block) == (rule == "activation_counts_shard"), (rule, block)
        assert ("--breakdown ad=kind rs=question_type" in block) == (rule == "score_ablation"), (rule, block)


@pytest.mark.parametrize(
    "override, key",
    [
        ("seed=-1", "seed"),
        ("device=gpu0", "device"),
        ("domains=[ad]", "domains"),
        ("dtype=float8", "dtype"),
        ("gpu=yes", "gpu"),
    ],
)
def test_invalid_values_fail_before_any_job_naming_the_key(tmp_path, override, key):
    code, printed = dry_run("--config", override, cwd=tmp_path)
    assert code != 0
    assert "Error validating config" in printed
    assert f"On instance['{key}']" in printed  # jsonschema names the offending key
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "overlay, where",
    [
        ({"extraction": {"anyres_padding": "pad"}}, "['extraction']['anyres_padding']"),
        ({"evaluation": {"breakdown": {"rs": ""}}}, "['evaluation']['breakdown']['rs']"),
        ({"evaluation": {"breakdown": {"rss": "question_type"}}}, "['evaluation']['breakdown']"),
    ],
)
def test_invalid_nested_values_fail_naming_the_key(tmp_path, overlay, where):
    # nested values come in a config file: `--config` would hand them over as strings (see `overlay`)
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    code, printed = dry_run("--configfile", str(tmp_path / "overlay.yaml"), cwd=tmp_path)
    assert code != 0
    assert "Error validating config" in printed
    assert f"On instance{where}" in printed


def test_moved_extraction_dtype_is_refused(tmp_path):
    (tmp_path / "old.yaml").write_text("extraction: {dtype: float32}\n")
    code, printed = dry_run("--configfile", str(tmp_path / "old.yaml"), cwd=tmp_path)
    assert code != 0
    assert "'dtype' was unexpected" in printed


def test_unknown_key_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text((ROOT / "config/config.yaml").read_text() + "\ndemo_model_typo: {steps: 3}\n")
    code, printed = dry_run("--configfile", str(config), cwd=tmp_path)
    assert code != 0
    assert "demo_model_typo" in printed


def test_cli_lists_every_stage():
    result = subprocess.run([sys.executable, "-m", "mmneuron", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for name in ("make-data", "train-demo", "extract", "merge", "select", "lens", "ablate", "score", "perturb"):
        assert name in result.stdout


# The small real run (`finished_run`, in conftest.py: once for the session).


def overlay(workdir, name, values):
    """`--configfile SMALL OVERLAY`: the small config with `values` laid over it.

    How Snakemake 9 merges: the `--configfile` files, in order, then `--config`, are laid over the
    Snakefile's own `configfile:` (config/config.yaml) recursively: mappings merge key by key, lists and
    scalars are replaced (so an empty mapping removes nothing). `--config KEY=VALUE` reads VALUE as an
    int, a float, `True`/`False` (only so spelled: `true` stays a string), or else YAML whose scalars all
    stay strings: `--config 'ablation={n_boot: 200}'` merges into the section but fails validation
    ('200' is not of type 'integer'). So top-level numbers may come with `--config`, nested values in a file.
    """
    path = workdir.parent / f"{workdir.name}-{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ("--configfile", str(SMALL_CONFIG), str(path))


def reruns(workdir, *config):
    """The jobs per rule a dry run plans, and the rules with a job whose own params changed."""
    code, printed = dry_run(*config, cwd=workdir)
    assert code == 0, printed
    changed = {row["rule"] for row in summary(*config, cwd=workdir) if row["status"] == "params changed"}
    return job_stats(printed), changed


@pytest.mark.slow
def test_small_run_runs_every_rule(finished_run):
    workdir, planned, finished, seconds = finished_run
    print(f"small workflow: {sum(finished.values())} jobs in {seconds:.0f} s")
    rules = subprocess.run(
        command("--list-rules", "--configfile", str(SMALL_CONFIG), cwd=workdir),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(planned) == set(rules)  # every rule of the workflow (at this config) has jobs
    assert finished == planned
    for target in (
        "results/data/contact_sheet.png",
        "results/models/demo/model.safetensors",
        "results/models/demo/accuracy.json",
        "results/demo/neurons.json",
        "results/demo/lens/lens.csv",
        "results/demo/ablation/scores.csv",
        "results/demo/ablation/scores_random.csv",
        "results/demo/perturbation/perturbation.csv",
        "results/report.html",
        "results/report.md",
    ):
        assert (workdir / target).is_file(), target
    rows = summary("--configfile", str(SMALL_CONFIG), cwd=workdir)
    assert {row["rule"] for row in rows} == set(planned) - {"all"}
    for row in rows:
        assert row["status"] == "ok" and row["plan"] == "no update", row
        assert (workdir / row["output_file"]).exists(), row
        assert (workdir / row["log-file(s)"]).is_file(), row  # every job logs to logs/
        assert row["log-file(s)"].startswith("logs/"), row
    # the heavy rules' `benchmark:` files: Snakemake's wall time and peak memory per job
    heavy = {"demo_model", "activation_counts_shard", "select_neurons", "select_method", "logit_lens", "ablate"}
    tables = list((workdir / "logs/benchmarks").rglob("*.tsv"))
    assert len(tables) == sum(planned[rule] for rule in heavy | {"perturbation"})
    for table in tables:
        header, values = table.read_text().splitlines()
        assert header.split("\t")[:3] == ["s", "h:m:s", "max_rss"] and float(values.split("\t")[0]) > 0, table


@pytest.mark.slow
def test_the_folder_domain_went_through_every_stage(finished_run):
    from mmneuron.counts import Counts
    from mmneuron.data.samples import read_samples

    workdir = finished_run[0]
    for split, n in PETS.items():
        samples = read_samples(workdir / f"data/pets/{split}.parquet")
        assert len(samples) == n, split
        assert {sample.domain for sample in samples} == {"pets"}
    counts = Counts.load(workdir / "results/demo/counts/pets.safetensors")
    assert (counts.domain, counts.samples) == ("pets", PETS["stats"])
    # "puppy" and "kitten" are not the demo tokenizer's words: each shard counts them as unknown tokens
    shards = sorted((workdir / "results/demo/counts/shards").glob("pets.*.safetensors"))
    assert shards and all(Counts.load(path).settings["unknown_tokens"] > 0 for path in shards)
    neurons = json.loads((workdir / "results/demo/neurons.json").read_text())
    assert "pets" in neurons["domains"] and neurons["samples"]["pets"] == PETS["stats"]
    answers = [
        json.loads(line)
        for path in sorted((workdir / "results/demo/ablation/answers/dape/pets").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    runs = len(list((workdir / "results/demo/ablation/answers/dape/pets").rglob("*.jsonl")))
    assert runs and len(answers) == runs * PETS["eval"]


@pytest.mark.slow
def test_a_mean_activation_condition_sets_the_neurons_to_their_pooled_mean(finished_run):
    import pandas as pd

    from mmneuron.counts import load_many, mean_activations
    from mmneuron.selection import Selection

    workdir = finished_run[0]
    records = [
        json.loads(line)
        for line in (workdir / "results/demo/ablation/answers/dape/rs/lm@mean/own.jsonl").read_text().splitlines()
    ]
    assert records and {r["condition"] for r in records} == {"lm@mean"}
    assert records[0]["intervention"] == {"mode": "mean", "positions": "all", "prefill_only": False}
    lm = Selection.load(workdir / "results/demo/neurons.json").sites["lm"]
    assert records[0]["deactivated"] == len(lm.by_domain["rs"])
    assert (workdir / "results/demo/ablation/answers/dape/rs/lm@mean/random1.jsonl").is_file()
    assert (workdir / "results/demo/ablation/answers/margin/rs/lm@mean/own.jsonl").is_file()
    table = pd.read_csv(workdir / "results/demo/perturbation/perturbation.csv")
    assert "lm@mean" in set(table["condition"])
    # the means the jobs used: every domain's statistics pooled, finite, not all zero
    counts = load_many([workdir / f"results/demo/counts/{domain}.safetensors" for domain in ("ad", "rs", "pets")])
    means = mean_activations(list(counts.values()))["lm"]
    assert means.isfinite().all() and means.abs().sum() > 0


@pytest.mark.slow
def test_external_sets_are_imported_and_ablated_on_every_domain(finished_run):
    import pandas as pd
    from conftest import LAPE_SETS

    from mmneuron.selection import Selection

    workdir = finished_run[0]
    imported = Selection.load(workdir / "results/demo/external/lang.json")
    expected = {
        name: sorted((layer, n) for layer, ns in chosen.items() for n in ns) for name, chosen in LAPE_SETS.items()
    }
    assert imported.label == "external_lang" and imported.sites["lm"].by_domain == expected
    for domain in ("ad", "rs", "pets"):
        answers = workdir / "results/demo/ablation/answers"
        runs = {
            path.stem: [json.loads(line) for line in path.read_text().splitlines()]
            for path in (answers / f"external_lang/{domain}/lm").glob("*.jsonl")
        }
        assert set(runs) == {"from_few", "from_empty"}
        few = runs["from_few"]
        assert {r["method"] for r in few} == {"external_lang"} and few[0]["deactivated"] == len(expected["few"])
        baseline = [json.loads(line) for line in (answers / f"dape/{domain}/none/own.jsonl").read_text().splitlines()]
        # the empty set deactivates nothing: the baseline's answers, sample for sample
        strip = lambda records: [(r["sample_id"], r["prediction"], r["reference_loglik"]) for r in records]  # noqa: E731
        assert strip(runs["from_empty"]) == strip(baseline)
    table = pd.read_csv(workdir / "results/demo/ablation/scores.csv")
    external = table[table["method"] == "external_lang"]
    assert set(external["source_domain"]) == {"few", "empty"} and set(external["domain"]) == {"ad", "rs", "pets"}
    empty = external[(external["source_domain"] == "empty") & (external["subset"] == "all")]
    assert (empty["delta"].abs() < 1e-12).all()


@pytest.mark.slow
def test_unchanged_config_reruns_nothing(finished_run):
    workdir = finished_run[0]
    assert reruns(workdir, "--configfile", str(SMALL_CONFIG)) == ({}, set())


@pytest.mark.slow
def test_changed_seed_reruns_everything(finished_run):
    workdir, planned = finished_run[:2]
    # a top-level value can come with --config (it is parsed as an int); nested ones need a file
    jobs, changed = reruns(workdir, "--configfile", str(SMALL_CONFIG), "--config", "seed=1")
    assert jobs == planned
    assert changed == {"synthetic_domain", "prepare_domain", "demo_model", "ablate", "score_ablation", "report"}


@pytest.mark.slow
def test_changed_bootstrap_reruns_only_the_scoring(finished_run):
    workdir = finished_run[0]
    jobs, changed = reruns(workdir, *overlay(workdir, "n_boot", {"ablation": {"n_boot": 200}}))
    assert jobs == {"score_ablation": 1, "report": 1, "all": 1}
    assert changed == {"score_ablation", "report"}  # the report shows the whole configuration


@pytest.mark.slow
def test_changed_deactivation_value_reruns_ablation_and_perturbation(finished_run):
    workdir, planned = finished_run[:2]
    jobs, changed = reruns(workdir, *overlay(workdir, "value", {"ablation": {"value": 0.5}}))
    gathers = planned["ablation_answers"]
    assert jobs == {
        "ablate": planned["ablate"],
        "ablation_answers": gathers,
        "perturbation": 1,
        "score_ablation": 1,
        "report": 1,
        "all": 1,
    }
    assert changed == {"ablate", "perturbation", "report"}


@pytest.mark.slow
def test_changed_dtype_reruns_every_model_job_and_what_follows(finished_run):
    workdir, planned = finished_run[:2]
    jobs, changed = reruns(workdir, *overlay(workdir, "dtype", {"dtype": "float32"}))
    # importing the external sets reads the model's config only
    upstream = {"synthetic_domain", "prepare_domain", "contact_sheet", "demo_model", "import_neurons"}
    assert jobs == {rule: count for rule, count in planned.items() if rule not in upstream}
    assert changed == MODEL_RULES | {"report"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting", [{"attn_implementation": "eager"}, {"trust_remote_code": True}, {"dtype": "float32"}]
)
def test_changed_model_loading_reruns_every_model_job_and_what_follows(finished_run, setting):
    workdir, planned = finished_run[:2]
    models = {"models": {"demo": {"path": "results/models/demo", **setting}}}
    jobs, changed = reruns(workdir, *overlay(workdir, next(iter(setting)), models))
    # importing the external sets builds the model from its config: only trust_remote_code matters to it
    imports = {"import_neurons"} if "trust_remote_code" in setting else set()
    upstream = {"synthetic_domain", "prepare_domain", "contact_sheet", "demo_model", "import_neurons"} - imports
    assert jobs == {rule: count for rule, count in planned.items() if rule not in upstream}
    assert changed == MODEL_RULES | {"report"} | imports
