"""The demo model: builds with the real LLaVA-NeXT classes, trains, reports honest accuracy, reloads offline."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaNextForConditionalGeneration

from mmneuron.data import synthetic
from mmneuron.data.samples import decode_image, read_samples, write_samples
from mmneuron.models.demo import build_demo_model, build_demo_processor
from mmneuron.models.generation import decoding_settings, generate_answers
from mmneuron.models.inputs import user_turn
from mmneuron.models.loading import load_model
from mmneuron.models.shipped import ShippedModelError, checked_files, install


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A demo model trained briefly through the CLI on two small domains."""
    root = tmp_path_factory.mktemp("demo")
    for domain in ("med", "doc"):
        write_samples(synthetic.generate(domain, "train", 96), root / domain / "train.parquet")
        write_samples(synthetic.generate(domain, "eval", 12), root / domain / "eval.parquet")
    command = [
        sys.executable,
        "-m",
        "mmneuron",
        "train-demo",
        "--train",
        str(root / "med/train.parquet"),
        str(root / "doc/train.parquet"),
        "--eval",
        str(root / "med/eval.parquet"),
        str(root / "doc/eval.parquet"),
        "--out",
        str(root / "model"),
        "--steps",
        "30",
        "--batch-size",
        "8",
        "--warmup-steps",
        "5",
        "--threads",
        "1",
    ]
    subprocess.run(command, check=True, capture_output=True)
    return root


def test_accuracy_file_matches_an_independent_evaluation(trained):
    report = json.loads((trained / "model/accuracy.json").read_text())
    assert set(report["by_domain"]) == {"med", "doc"}
    assert report["n"] == {"med": 12, "doc": 12}
    assert report["settings"]["steps"] == 30

    model = LlavaNextForConditionalGeneration.from_pretrained(trained / "model")
    processor = AutoProcessor.from_pretrained(trained / "model")
    for domain in ("med", "doc"):
        samples = read_samples(trained / domain / "eval.parquet")
        hits = 0
        for sample in samples:  # one at a time: no padding, no batching shared with the code under test
            inputs = processor(
                images=[decode_image(sample)], text=[user_turn(processor, sample.question)], return_tensors="pt"
            )
            output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            hits += answer.strip().lower() == sample.answers[0]
        assert report["by_domain"][domain] == pytest.approx(hits / len(samples))
    assert report["overall"] == pytest.approx(sum(report["by_domain"].values()) / 2)


def test_saved_model_reloads_with_identical_outputs(trained):
    model = LlavaNextForConditionalGeneration.from_pretrained(trained / "model")
    again = LlavaNextForConditionalGeneration.from_pretrained(trained / "model")
    processor = AutoProcessor.from_pretrained(trained / "model")
    sample = read_samples(trained / "med/eval.parquet", limit=1)[0]
    inputs = processor(images=[decode_image(sample)], text=[user_turn(processor, sample.question)], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, again(**inputs).logits)
    assert processor.tokenizer.padding_side == "left"


def test_training_is_deterministic_for_a_seed():
    from mmneuron.models.train_demo import TrainSettings, train

    samples = synthetic.generate("ad", "train", 24)
    weights = []
    for _ in range(2):
        processor = build_demo_processor(synthetic.vocabulary())
        model = build_demo_model(processor, seed=3)
        train(model, processor, samples, TrainSettings(steps=4, batch_size=4, warmup_steps=1, seed=3))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_demo_architecture_is_llava_next_with_an_inert_vision_layer():
    processor = build_demo_processor(synthetic.vocabulary())
    model = build_demo_model(processor)
    assert model.config.model_type == "llava_next"
    assert model.config.vision_feature_layer == -2
    assert model.config.image_grid_pinpoints == processor.image_processor.image_grid_pinpoints
    question = synthetic.generate("com", "eval", 1)[0]
    prompts, images = [user_turn(processor, question.question)], [decode_image(question)]
    answers = generate_answers(
        model, processor, prompts, images, decoding_settings(model, processor, 4), progress=False
    )
    assert len(answers) == 1  # an untrained model answers something; the point is that it runs end to end


def test_answer_loss_equals_the_loss_over_every_position():
    from mmneuron.models.train_demo import IGNORE, answer_loss

    processor = build_demo_processor(synthetic.vocabulary())
    model = build_demo_model(processor, seed=1)
    with torch.no_grad():  # sharpen the untrained model's logits, whose losses are all near log(vocabulary)
        model.lm_head.weight.mul_(20)
    samples = synthetic.generate("rs", "train", 3)
    tokenizer = processor.tokenizer
    rows = []
    for sample in samples:
        prompt = user_turn(processor, sample.question)
        inputs = processor(images=[decode_image(sample)], text=[prompt], return_tensors="pt")
        answer = tokenizer(" " + sample.answers[0], add_special_tokens=False)["input_ids"]
        if rows:  # the first row's labels stop without </s>: rows of unequal answer lengths
            answer.append(tokenizer.eos_token_id)
        rows.append((inputs, torch.tensor(answer)))
    # Full-sequence loss, one sample at a time (no padding): mean over every answer token.
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, answer in rows:
            ids = torch.cat([inputs["input_ids"][0], answer])[None]
            logits = model(input_ids=ids, pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"]).logits
            predicted = logits[0, -len(answer) - 1 : -1]
            total += torch.nn.functional.cross_entropy(predicted, answer, reduction="sum").item()
            count += len(answer)
        # The same rows left-padded into one batch.
        width = max(len(inputs["input_ids"][0]) + len(answer) for inputs, answer in rows)
        pad = tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad)
        labels = torch.full((len(rows), width), IGNORE)
        for i, (inputs, answer) in enumerate(rows):
            row = torch.cat([inputs["input_ids"][0], answer])
            ids[i, width - len(row) :] = row
            labels[i, width - len(answer) :] = answer
        loss = answer_loss(
            model,
            ids,
            labels,
            torch.cat([r[0]["pixel_values"] for r in rows]),
            torch.cat([r[0]["image_sizes"] for r in rows]),
            pad,
        )
        everywhere = answer_loss(
            model,
            ids,
            labels,
            torch.cat([r[0]["pixel_values"] for r in rows]),
            torch.cat([r[0]["image_sizes"] for r in rows]),
            pad,
            logits_to_keep=0,
        )
    assert loss.item() == pytest.approx(total / count, rel=1e-4)
    assert everywhere.item() == pytest.approx(total / count, rel=1e-4)


def test_training_runs_eager_attention_and_restores_the_models_own():
    from mmneuron.models.train_demo import TrainSettings, train

    processor = build_demo_processor(synthetic.vocabulary())
    model = build_demo_model(processor)
    seen = []
    hook = model.model.language_model.layers[0].self_attn.register_forward_hook(
        lambda module, args, output: seen.append(module.config._attn_implementation)
    )
    train(model, processor, synthetic.generate("doc", "train", 4), TrainSettings(steps=1, batch_size=2, warmup_steps=1))
    hook.remove()
    assert seen == ["eager"] and model.config._attn_implementation == "sdpa"


SHIPPED = Path(__file__).resolve().parents[1] / "models/demo"


def test_the_shipped_demo_model_is_intact_and_installs(tmp_path):
    listed = checked_files(SHIPPED)
    assert sorted(path.name for path in listed) == sorted(
        path.name for path in SHIPPED.iterdir() if path.name not in ("SHA256SUMS", "RECIPE.md")
    )
    install(SHIPPED, tmp_path / "demo")
    model, processor = load_model(tmp_path / "demo", device="cpu")
    assert model.config.model_type == "llava_next" and processor.tokenizer.padding_side == "left"
    report = json.loads((tmp_path / "demo/accuracy.json").read_text())
    assert report["overall"] == pytest.approx(sum(report["by_domain"].values()) / 5) and report["overall"] > 0.85


def test_an_altered_shipped_file_is_refused_naming_it(tmp_path):
    copy = tmp_path / "shipped"
    shutil.copytree(SHIPPED, copy)
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ShippedModelError, match=r"model.safetensors: its SHA-256 differs"):
        install(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (copy / "config.json").unlink()
    with pytest.raises(ShippedModelError, match=r"config.json: listed in .*SHA256SUMS but missing"):
        checked_files(copy)
