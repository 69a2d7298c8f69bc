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
    threads: workflow.cores
    params:
        dir=subpath(output.model, parent=True),
        settings=config["demo_model"],
    shell:
        MMNEURON + " train-demo --train {input.train} --eval {input.eval} --out {params.dir}"
        " --steps {params.settings[steps]} --batch-size {params.settings[batch_size]}"
        " --learning-rate {params.settings[learning_rate]} --warmup-steps {params.settings[warmup_steps]}"
        " --eval-batch-size {params.settings[eval_batch_size]} --seed {config[seed]}"
        " --threads {threads} > {log} 2>&1"
