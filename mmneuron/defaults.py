"""The one source of every stage's default settings.

Each section mirrors a section of ``config/schema.yaml`` key for key: the command line takes its
defaults from here, the library functions default to these values, and a test holds the schema's
defaults equal to them. Plain values only, so that ``mmneuron --help`` needs no heavy import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATS_PROMPT = "<image>\n{question}"  # the authors' statistics prompt: no chat template
SCOPES = ("all", "image", "text")  # the token positions counted: every one, image tokens, text tokens
# LLaVA-NeXT's tile padding in the vision tower's and projector's counts: left out, or counted (the authors')
ANYRES_PADDING = ("skip", "count")
LINGO_JUDGE = "lingo_judge"  # the metric name of LingoQA's learned judge (mmneuron.vqa.judge)
DECODINGS = ("greedy", "compat")  # greedy, or sampled at a temperature with a seed as the authors did
DEMO_DOMAINS = ("ad", "med", "rs", "com", "doc")  # the synthetic demo's domains, standing in for the paper's five
# neuron selectors (mmneuron.selectors, docs/selectors.md): DAPE, the margin, MINER's four strategies, random
SELECTION_METHODS = ("dape", "margin", "miner_adaptive", "miner_la_mu", "miner_lu_ma", "miner_uniform", "random")
EXTERNAL_METHOD = "external"  # the method of neuron sets imported from a LAPE-format file (mmneuron.external)


@dataclass(frozen=True)
class Run:
    seed: int = 0
    device: str = "auto"  # auto: a GPU when there is one
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
    gpu: bool = False  # model-running jobs ask the scheduler for a GPU


@dataclass(frozen=True)
class Model:
    """One entry of the config's ``models`` besides its ``path``: how it is loaded, its conditions."""

    dtype: str | None = None  # None: the run's dtype
    device_map: str | None = None  # None: the whole model on the run's device
    attn_implementation: str | None = None  # None: transformers' choice
    trust_remote_code: bool = False
    conditions: list | None = None  # None: the ablation's
    chat: bool | None = None  # None: the evaluation's


@dataclass(frozen=True)
class Data:
    source: str = "synthetic"  # of every domain without an entry in `sources`
    sources: dict = field(default_factory=dict)  # domain -> {source, options} for `mmneuron prepare`
    image_size: int = 64
    sizes: dict = field(default_factory=lambda: {"train": 2000, "stats": 200, "eval": 100})
    contact_sheet_per_domain: int = 6


@dataclass(frozen=True)
class DemoModel:
    train: bool = False  # train the demo model instead of using the shipped one (models/demo)
    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    eval_batch_size: int = 64


@dataclass(frozen=True)
class Extraction:
    prompt: str = STATS_PROMPT
    batch_size: int = 16
    samples: int | None = None  # first N statistics samples per domain; None: all
    sites: list | None = None  # None: every site of the model
    max_bad_share: float = 0.0  # share of bad images tolerated before a job fails
    shards: int = 1
    anyres_padding: str = ANYRES_PADDING[0]


@dataclass(frozen=True)
class Selection:
    top_rate: float = 0.01
    filter_rate: float = 0.95
    assign_rate: float = 0.95
    scope: str = "all"
    methods: list = field(default_factory=lambda: ["dape"])  # the bake-off: each gets its neuron sets and ablation
    match_sizes: bool = False  # every method takes as many neurons per site and domain as DAPE
    miner_weights: dict = field(default_factory=lambda: {"prob": 0.0, "mean": 0.5, "max": 0.5})  # MINER's default mix
    curve_shards: int | None = None  # shards per domain the sample-count curve grows to; None: all
    external: dict = field(default_factory=dict)  # label -> {file, site, names}: LAPE-format sets to ablate


@dataclass(frozen=True)
class Stages:
    start_fraction: float = 0.1
    min_rise: float = 0.05
    flat_tolerance: float = 0.05


@dataclass(frozen=True)
class Lens:
    samples: int = 40
    batch_size: int = 16
    chunk_size: int = 4096
    prompt: str = STATS_PROMPT
    chat: bool = False
    stages: Stages = field(default_factory=Stages)


@dataclass(frozen=True)
class Evaluation:
    chat: bool = True
    prompts: dict = field(default_factory=lambda: {"default": "{question}"})
    # the paper's metric per domain (docs/metrics.md); the demo's config scores its one-word answers
    metrics: dict = field(
        default_factory=lambda: {
            "ad": LINGO_JUDGE,
            "med": "option_accuracy",
            "rs": "exact_match",
            "com": "vqa_accuracy",
            "doc": "anls",
        }
    )
    breakdown: dict = field(default_factory=lambda: {"rs": "question_type"})  # rows per value of a meta key
    judge: str = "wayveai/Lingo-Judge"  # the Lingo-Judge folder or Hugging Face id


@dataclass(frozen=True)
class Ablation:
    conditions: list = field(default_factory=lambda: ["none", "lm", "vision", "projector", "all"])
    random_seeds: list = field(default_factory=lambda: [1, 2, 3])
    cross_domain: list = field(default_factory=list)
    max_new_tokens: int = 16
    decoding: str = DECODINGS[0]
    temperature: float = 0.9
    batch_size: int = 16
    likelihood: bool = True
    value: float = 0.0
    threads: int = 1
    groups: int = 1  # jobs a domain's runs are split into, each loading the model once
    shards: int = 1  # answer-generation jobs per group, each a block of whole batches of the samples
    n_boot: int = 1000


@dataclass(frozen=True)
class Perturbation:
    split: str = "eval"
    samples: int = 20
    batch_size: int = 16
    conditions: list | None = None  # None: the ablation's
    random_seeds: list | None = None  # None: the ablation's


RUN = Run()
MODEL = Model()
DATA = Data()
DEMO_MODEL = DemoModel()
EXTRACTION = Extraction()
SELECTION = Selection()
LENS = Lens()
EVALUATION = Evaluation()
ABLATION = Ablation()
PERTURBATION = Perturbation()
# config/schema.yaml section -> its defaults (top-level keys are the fields of RUN)
SECTIONS = {
    "data": DATA,
    "demo_model": DEMO_MODEL,
    "extraction": EXTRACTION,
    "selection": SELECTION,
    "lens": LENS,
    "evaluation": EVALUATION,
    "ablation": ABLATION,
    "perturbation": PERTURBATION,
}
