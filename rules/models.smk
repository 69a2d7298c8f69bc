# Models: the demo model is trained here on the synthetic domains; real checkpoints come later.


rule train_demo_model:
    input:
        train=expand("data/{domain}/train.parquet", domain=DOMAINS),
        eval=expand("data/{domain}/eval.parquet", domain=DOMAINS),
    output:
        model="results/models/demo/model.safetensors",
        accuracy="results/models/demo/accuracy.json",
    log:
        "logs/models/train_demo_model.log",
    conda:
        "../envs/mmneuron.yaml"
    # Training runs on the CPU (train-demo has no device option): it takes every core and no GPU.
    threads: workflow.cores
    params:
        dir=subpath(output.model, parent=True),
        steps=option("--steps", config["demo_model"]["steps"]),
        batch_size=option("--batch-size", config["demo_model"]["batch_size"]),
        learning_rate=option("--learning-rate", config["demo_model"]["learning_rate"]),
        warmup_steps=option("--warmup-steps", config["demo_model"]["warmup_steps"]),
        eval_batch_size=option("--eval-batch-size", config["demo_model"]["eval_batch_size"]),
        seed=option("--seed", config["seed"]),
    shell:
        "python -m mmneuron train-demo --train {input.train} --eval {input.eval} --out {params.dir}"
        " {params.steps} {params.batch_size} {params.learning_rate} {params.warmup_steps} {params.eval_batch_size}"
        " {params.seed} --threads {threads} > {log} 2>&1"
