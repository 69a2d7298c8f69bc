# Helpers shared by the rules: config values as command-line options, models, and the jobs' resources.
#
# Provenance: Snakemake reruns a job when the params it recorded change, not when a config value read in
# the shell command does, so every config value a command uses is one param of its own. Snakemake records a
# job's params as a *set* of values, without their names, so a param is the whole option (`--seed 0`, not
# `0`). With bare values, a swap of two values would go unseen, and so would a change to a value another
# param holds while the old one stays held too: the lens' `start_fraction` is 0.1 and `min_rise` and
# `flat_tolerance` are both 0.05; `min_rise: 0.1` would leave the recorded set {0.05, 0.1} as it was.
import re
import shlex

DOMAINS = config["domains"]
MODELS = list(config["models"])  # without the ones a config file dropped (`NAME: null`, see the Snakefile)
SYNTHETIC_DOMAINS = ("ad", "med", "rs", "com", "doc")  # mmneuron make-data's (mmneuron.defaults.DEMO_DOMAINS)
# Domains whose samples `mmneuron prepare` draws from a dataset source (data.sources); the others are synthetic.
SOURCES = {domain: entry for domain, entry in config["data"]["sources"].items() if domain in DOMAINS}
SYNTHETIC = [domain for domain in DOMAINS if domain not in SOURCES]
if set(SYNTHETIC) - set(SYNTHETIC_DOMAINS):
    raise ValueError(
        f"domains {sorted(set(SYNTHETIC) - set(SYNTHETIC_DOMAINS))} have no entry in data.sources, and only"
        f" {', '.join(SYNTHETIC_DOMAINS)} can be synthetic"
    )
if set(DOMAINS) - set(config["evaluation"]["metrics"]):
    raise ValueError(
        f"domains {sorted(set(DOMAINS) - set(config['evaluation']['metrics']))} have no evaluation.metrics entry"
    )


def option(flag, value):
    """`flag value`, the value quoted for the shell: one param holding one config value."""
    return f"{flag} {shlex.quote(str(value))}"


def switch(flag, on):
    """`--flag` or `--no-flag`: a boolean config value as a param, always explicit (the commands'
    own defaults are the library's, which need not be this config's)."""
    return flag if on else flag.replace("--", "--no-", 1)


def options(flag, values):
    """`flag v1 v2 ...`, or nothing when there are no values: a list config value as a param."""
    return " ".join([flag, *map(shlex.quote, map(str, values))]) if values else ""


def domain_pattern(domains):
    """A wildcard constraint matching exactly `domains` (none: a pattern matching nothing)."""
    return "|".join(map(re.escape, domains)) or "(?!)"


def source_size(wildcards):
    """Samples of the domain's split: its own `data.sources.DOMAIN.sizes`, or `data.sizes`."""
    own = SOURCES[wildcards.domain].get("sizes") or {}
    return own.get(wildcards.split, config["data"]["sizes"][wildcards.split])


def source_options(wildcards):
    """The domain's source options (config `data.sources.DOMAIN.options`) as `--name value` flags, in the
    config's order: `true` is the bare flag, false and null leave it out, and `{split}` in a value becomes
    the split (`questions: pets/{split}.jsonl`)."""
    flags = []
    for name, value in (SOURCES[wildcards.domain].get("options") or {}).items():
        if value is True:
            flags.append(f"--{name}")
        elif value is not False and value is not None:
            flags.append(option(f"--{name}", str(value).replace("{split}", wildcards.split)))
    return " ".join(flags)


def key_values(flag, mapping):
    """`flag k1=v1 k2=v2 ...` over the configured domains with a value, or nothing: a per-domain config dict."""
    return options(flag, [f"{domain}={mapping[domain]}" for domain in DOMAINS if mapping.get(domain) is not None])


# Each model's settings, with the schema's defaults filled in by the Snakefile's validation.
MODEL_SETTINGS = config["models"]


def model_path(wildcards):
    """The model folder or Hugging Face id of `wildcards.model` (config `models`)."""
    return MODEL_SETTINGS[wildcards.model]["path"]


def model_dtype(wildcards):
    """`--dtype D`: the model's own dtype, or the run's."""
    return option("--dtype", MODEL_SETTINGS[wildcards.model]["dtype"] or config["dtype"])


def model_device_map(wildcards):
    """`--device-map M` when the model is placed by a device map, else nothing."""
    device_map = MODEL_SETTINGS[wildcards.model]["device_map"]
    return option("--device-map", device_map) if device_map else ""


def model_attn_implementation(wildcards):
    attn = MODEL_SETTINGS[wildcards.model]["attn_implementation"]
    return option("--attn-implementation", attn) if attn else ""


def model_trust_remote_code(wildcards):
    return switch("--trust-remote-code", MODEL_SETTINGS[wildcards.model]["trust_remote_code"])


def model_option(wildcards):
    """`--model PATH`: the model a job runs, as a param (the path is config; a changed path reruns the job)."""
    return option("--model", model_path(wildcards))


def model_files_of(name):
    """A model the workflow builds (under results/models/) is an input; external ones are not."""
    path = MODEL_SETTINGS[name]["path"].rstrip("/")
    return [f"{path}/model.safetensors"] if path.startswith("results/models/") else []


def model_files(wildcards):
    return model_files_of(wildcards.model)


# Options every model-running command (extract, lens, ablate, perturb) takes, besides the model's own
# (model_option, model_dtype, model_device_map, model_attn_implementation, model_trust_remote_code).
DEVICE = option("--device", config["device"])

# Model-running jobs ask the scheduler for a GPU only when `gpu: true` (`device: auto` alone does not: it
# would request one on CPU-only clusters); data, training, selection, merge and scoring jobs never do.
MODEL_GPUS = 1 if config["gpu"] else 0
# Their threads: a job whose tensors live on the CPU (`device: cpu`, or `auto` with no GPU asked for) is
# torch's arithmetic and takes every core, so such jobs run one at a time; a job on a GPU (`gpu: true`, or a
# `cuda` device on a machine scheduled by hand) needs the CPU only to decode images and tokenize, and 2
# threads leave the other cores to other jobs. (`auto` on a local GPU with `gpu: false` still runs on the
# GPU, one job at a time: set `gpu: true` there.)
MODEL_ON_CPU = config["device"] == "cpu" or (config["device"] == "auto" and not config["gpu"])
MODEL_THREADS = workflow.cores if MODEL_ON_CPU else 2


# Activation statistics (rules/activations.smk): each domain's samples in two halves, each half in shards.
HALF_INDEX = {"a": 1, "b": 2}


def scatter_item(wildcards):
    """(i, n) of a `{scatteritem}` wildcard `i-of-n`."""
    index, _, count = wildcards.scatteritem.partition("-of-")
    return int(index), int(count)


def extraction_shard(wildcards):
    """`--shard i/N`: this job's block of the domain's samples: shard s of n of half h is block (h-1)*n + s of 2n."""
    index, count = scatter_item(wildcards)
    return f"--shard {(HALF_INDEX[wildcards.half] - 1) * count + index}/{2 * count}"


# The selector bake-off (rules/neurons.smk): DAPE's neuron sets are results/{model}/neurons.json, which every
# stage reads; each other method of `selection.methods` has results/{model}/neurons/{method}.json.
METHODS = config["selection"]["methods"]
OTHER_METHODS = [method for method in METHODS if method != "dape"]


# Neuron sets from elsewhere (`selection.external`): each label is the method external_{label}, imported per
# model by `mmneuron import-neurons` (rules/ablation.smk) and ablated with each of its sets at its site.
EXTERNAL = config["selection"]["external"]
EXTERNAL_METHODS = [f"external_{label}" for label in EXTERNAL]


def neurons_path(model, method):
    """The neuron file of `method` for `model`."""
    if method in EXTERNAL_METHODS:  # beside, not in, the selection's folder (DVC: the ablation stage imports them)
        return f"results/{model}/external/{method.removeprefix('external_')}.json"
    return f"results/{model}/neurons.json" if method == "dape" else f"results/{model}/neurons/{method}.json"


def neurons_file(wildcards):
    return neurons_path(wildcards.model, wildcards.method)


# MINER's weights and the seed are params only of the commands that run a MINER strategy or the random method.
MINER_WEIGHTS = options("--miner-weights", [f"{k}={v}" for k, v in config["selection"]["miner_weights"].items()])


def miner_weights(methods):
    return MINER_WEIGHTS if any(method.startswith("miner_") for method in methods) else ""


def random_seed(methods):
    return option("--seed", config["seed"]) if "random" in methods else ""


def extraction_shards(wildcards):
    """Every domain's extraction shards, half a's then half b's, in order (the sample-count curve's input)."""
    stem = f"results/{wildcards.model}/counts/shards"
    return [
        path
        for domain in DOMAINS
        for half in HALF_INDEX
        for path in gather.extraction(f"{stem}/{domain}.half{half}.{{scatteritem}}.safetensors")
    ]


# Deactivation experiment (rules/ablation.smk): a domain's runs per method (condition/variant: `own` for its own
# neurons, `random{seed}` for a random control, `from_{source}` for another domain's) in `ablation.groups`
# groups; one job per (method, group, shard) loads the model once and answers every run of its group. DAPE's
# runs hold `none` (every method's baseline: it deactivates nothing), the random controls and the cross-domain
# runs; another method's are every other condition with its own sets.
ABLATION_GROUPS = config["ablation"]["groups"]


def model_conditions(model):
    """The model's own ablation conditions (`models.NAME.conditions`: the paper's differ by model), or
    `ablation.conditions`."""
    return MODEL_SETTINGS[model]["conditions"] or config["ablation"]["conditions"]


def domain_runs(model, domain, method="dape"):
    """Every run of `method` for `model` evaluated on `domain`, in a fixed order."""
    ablation = config["ablation"]
    if method in EXTERNAL_METHODS:
        entry = EXTERNAL[method.removeprefix("external_")]
        return [f"{entry['site']}/from_{name}" for name in entry["names"]]
    if method != "dape":
        return [f"{condition}/own" for condition in model_conditions(model) if condition != "none"]
    runs = []
    for condition in model_conditions(model):
        runs.append(f"{condition}/own")
        if condition != "none":
            runs += [f"{condition}/random{seed}" for seed in ablation["random_seeds"]]
    for condition in ablation["cross_domain"]:
        runs += [f"{condition}/from_{source}" for source in DOMAINS if source != domain]
    return runs


def group_runs(wildcards):
    """The runs of group g of a domain: the g-th of `ablation.groups` contiguous blocks (never empty)."""
    runs = domain_runs(wildcards.model, wildcards.domain, wildcards.method)
    groups = min(ABLATION_GROUPS, len(runs))
    group = int(wildcards.group)
    return runs[(group - 1) * len(runs) // groups : group * len(runs) // groups]


def domain_groups(model, domain, method):
    return range(1, min(ABLATION_GROUPS, len(domain_runs(model, domain, method))) + 1)


def mean_statistics(model, runs):
    """Every domain's activation statistics where a run sets neurons to their mean activation (`SITES@mean...`)."""
    if any("@mean" in run for run in runs):
        return [f"results/{model}/counts/{domain}.safetensors" for domain in DOMAINS]
    return []


def ablation_statistics(wildcards):
    return mean_statistics(wildcards.model, group_runs(wildcards))


def ablation_jobs(wildcards):
    """Every answers file of a method's ablation jobs on a domain: each group's shards, in order."""
    stem = f"results/{wildcards.model}/ablation/jobs/{wildcards.method}/{wildcards.domain}"
    return [
        path
        for group in domain_groups(wildcards.model, wildcards.domain, wildcards.method)
        for path in gather.generation(f"{stem}/group{group}.{{scatteritem}}.jsonl")
    ]


# Hidden-state perturbation (rules/perturbation.smk): conditions and random seeds default to the
# ablation's (null); an empty list of seeds means no random controls. The evaluation split takes the
# evaluation prompts, the statistics split the lens' prompt.
def perturbation_condition_names(model):
    return config["perturbation"]["conditions"] or model_conditions(model)


def perturbation_conditions(wildcards):
    return options("--conditions", perturbation_condition_names(wildcards.model))


def perturbation_statistics(wildcards):
    return mean_statistics(wildcards.model, perturbation_condition_names(wildcards.model))


PERTURBATION_SEEDS = (
    config["ablation"]["random_seeds"]
    if config["perturbation"]["random_seeds"] is None
    else config["perturbation"]["random_seeds"]
)
if config["perturbation"]["split"] == "eval":
    PERTURBATION_PROMPTS = config["evaluation"]["prompts"]
else:
    PERTURBATION_PROMPTS = {"default": config["lens"]["prompt"]}


def evaluation_chat(wildcards):
    """`--chat` or `--no-chat` for the evaluation prompts: the model's own setting (`models.NAME.chat`:
    InstructBLIP has no chat template) or `evaluation.chat`."""
    chat = MODEL_SETTINGS[wildcards.model]["chat"]
    return switch("--chat", config["evaluation"]["chat"] if chat is None else chat)


def perturbation_chat(wildcards):
    if config["perturbation"]["split"] == "eval":
        return evaluation_chat(wildcards)
    return switch("--chat", config["lens"]["chat"])
