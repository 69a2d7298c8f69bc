# Models: the demo model. By default the one shipped in models/demo (trained by this rule, with its recipe)
# is copied after a checksum check, so every machine analyses the same weights; `demo_model.train: true`
# trains it here instead (weights trained on another CPU differ in the last bits). Real checkpoints are
# named in `models` and not built by the workflow.

DEMO_MODEL = config["demo_model"]
SHIPPED_DEMO = "models/demo"
TRAIN = (
    "python -m mmneuron train-demo --train {input.train} --eval {input.eval} --out {params.dir}"
    " {params.steps} {params.batch_size} {params.learning_rate} {params.warmup_steps} {params.eval_batch_size}"
    " {params.seed} --threads {threads} > {log} 2>&1"
)
INSTALL = 'python -m mmneuron install-model --from "$(dirname {input.shipped:q})" --out {params.dir} > {log} 2>&1'


rule demo_model:
    input:
        **(
            dict(
                # trained on the synthetic domains only: a prepared domain has no train split
                train=expand("data/{domain}/train.parquet", domain=SYNTHETIC),
                eval=expand("data/{domain}/eval.parquet", domain=SYNTHETIC),
            )
            if DEMO_MODEL["train"]
            else dict(shipped=f"{workflow.basedir}/{SHIPPED_DEMO}/SHA256SUMS")
        ),
    output:
        model="results/models/demo/model.safetensors",
        accuracy="results/models/demo/accuracy.json",
    log:
        "logs/models/demo_model.log",
    benchmark:
        "logs/benchmarks/models/demo_model.tsv"
    conda:
        "../envs/mmneuron.yaml"
    # Training runs on the CPU (train-demo has no device option): it takes every core and no GPU.
    threads: workflow.cores if DEMO_MODEL["train"] else 1
    params:
        **(
            dict(
                steps=option("--steps", DEMO_MODEL["steps"]),
                batch_size=option("--batch-size", DEMO_MODEL["batch_size"]),
                learning_rate=option("--learning-rate", DEMO_MODEL["learning_rate"]),
                warmup_steps=option("--warmup-steps", DEMO_MODEL["warmup_steps"]),
                eval_batch_size=option("--eval-batch-size", DEMO_MODEL["eval_batch_size"]),
                seed=option("--seed", config["seed"]),
            )
            if DEMO_MODEL["train"]
            else {}
        ),
        dir=subpath(output.model, parent=True),
        # the training settings, only when training (the shipped model's are in its RECIPE.md)
    shell:
        TRAIN if DEMO_MODEL["train"] else INSTALL
