"""The ablation experiment: conditions, random controls, answers, likelihoods, scores, CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import noise_image, selection_for

from mmneuron.ablation.answers import AblationError, read_answers
from mmneuron.ablation.likelihood import answer_loglik, reference_answer
from mmneuron.ablation.run import Settings, run_ablation
from mmneuron.ablation.scoring import LOGLIK
from mmneuron.cli import main
from mmneuron.conditions import PAPER_CONDITIONS, Condition, ConditionError, condition_sites, random_control
from mmneuron.data import synthetic
from mmneuron.data.samples import Sample, encode_png, write_samples
from mmneuron.extract import extract_counts
from mmneuron.models.demo import build_demo_model, build_demo_processor
from mmneuron.models.inputs import LEFT, InputError, build_prompt, encode
from mmneuron.models.sites import image_prompt, resolve_sites, site_names
from mmneuron.models.tiny import build_tiny, save_tiny
from mmneuron.selection import SelectionError
from mmneuron.selectors.random import ControlError

PLAIN = Settings(chat=False)  # the tiny models have no chat template
NEURONS = {
    "rs": {"lm": [(0, 1), (0, 9), (1, 3)], "vision": [(0, 2), (2, 7)], "projector": [(0, 4)]},
    "med": {"lm": [(1, 30), (1, 31)], "vision": [(1, 5)], "projector": []},
}


@pytest.fixture(scope="module")
def llava_next():
    model, processor = build_tiny("llava_next")
    return model, processor, selection_for(model, NEURONS)


# --- conditions and random controls -------------------------------------------------------------


def test_condition_names():
    sites = ["lm", "vision", "projector"]
    assert condition_sites("none", sites) == ()
    assert condition_sites("all", sites) == ("lm", "vision", "projector")
    assert condition_sites("vision+projector", sites) == ("vision", "projector")
    for bad in ("qformer", "lm+lm", "lm+", ""):
        with pytest.raises(ConditionError, match="condition"):
            condition_sites(bad, sites)
    for model_type, names in PAPER_CONDITIONS.items():
        for name in names:
            condition_sites(name, list(site_names(model_type)))
    with pytest.raises(ConditionError, match="none"):
        Condition("none", seed=1)
    assert condition_sites("vision+projector@mean_image", sites) == ("vision", "projector")
    assert Condition("all@x2.5_text_prefill").intervention(0.5).record() == {
        "mode": "scale",
        "factor": 2.5,
        "positions": "text",
        "prefill_only": True,
    }
    assert Condition("lm").intervention(0.5).record() == {
        "mode": "fixed",
        "value": 0.5,
        "positions": "all",
        "prefill_only": False,
    }
    assert Condition.from_run("lm@mean/random2") == Condition("lm@mean", seed=2)
    for bad in ("lm@", "lm@image_mean", "lm@prefill_image", "lm@x", "lm@xnan", "lm@mean_mean", "none@x2"):
        with pytest.raises(ConditionError, match="condition"):
            condition_sites(bad, sites)


def test_own_and_cross_domain_neurons(llava_next):
    _, _, selection = llava_next
    assert Condition("none").neurons(selection, "rs") == {}
    assert Condition("lm").neurons(selection, "rs") == {"lm": [(0, 1), (0, 9), (1, 3)]}
    assert Condition("lm+projector", source="med").neurons(selection, "rs") == {
        "lm": [(1, 30), (1, 31)],
        "projector": [],
    }
    with pytest.raises(ConditionError, match="'doc' has no neuron set"):
        Condition("lm").neurons(selection, "doc")


def test_a_neuron_file_of_another_model_is_refused(llava_next):
    model, processor, _ = llava_next
    samples = _mixed_samples("rs", 1)
    other = selection_for(build_tiny("instructblip")[0], {"rs": {}})
    with pytest.raises(SelectionError, match="site '(vision|qformer)'"):
        run_ablation(model, processor, samples, other, [Condition("none")], PLAIN, "x", progress=False)
    wider = selection_for(model, NEURONS)
    wider.sites["lm"].width = 65
    with pytest.raises(SelectionError, match="'lm' has 2 layers x 65 neurons, the model's has 2 x 64"):
        run_ablation(model, processor, samples, wider, [Condition("none")], PLAIN, "x", progress=False)


def test_random_control_matches_per_layer_counts_is_seeded_and_stays_in_the_site():
    own = [(0, 1), (0, 9), (2, 3), (2, 4), (2, 5), (5, 0)]
    draws = {seed: random_control(own, 16, seed, "vision", "lm", "rs", "rs") for seed in (1, 2, 3)}
    for drawn in draws.values():
        assert sorted(layer for layer, _ in drawn) == sorted(layer for layer, _ in own)
        assert len(set(drawn)) == len(drawn)
        assert all(0 <= neuron < 16 for _, neuron in drawn)
    assert random_control(own, 16, 1, "vision", "lm", "rs", "rs") == draws[1]
    assert draws[1] != draws[2] and draws[2] != draws[3]
    assert random_control(own, 16, 1, "lm", "lm", "rs", "rs") != draws[1]  # the site is part of the seed
    assert random_control([(0, n) for n in range(16)], 16, 1, "vision") == [(0, n) for n in range(16)]
    with pytest.raises(ControlError, match="more neurons"):
        random_control([(0, 1)] * 17, 16, 1, "vision")


def test_random_controls_are_independent_per_domain_and_condition():
    """Domains whose own sets have the same size per layer, and conditions sharing a site, get
    different random draws (seeded per seed, site, domain and condition); the same condition on
    the same domain always gets the same draw."""
    model, _ = build_tiny("llava_next")
    same_shape = {"lm": [(0, 1), (0, 2), (0, 3), (1, 4)], "vision": [(0, 5), (1, 6)]}
    selection = selection_for(model, {"rs": same_shape, "med": same_shape, "doc": same_shape})
    draw = {
        (name, domain): Condition(name, seed=1).neurons(selection, domain)
        for name in ("lm", "lm+vision")
        for domain in ("rs", "med", "doc")
    }
    assert len({tuple(draw["lm", domain]["lm"]) for domain in ("rs", "med", "doc")}) == 3
    assert draw["lm", "rs"]["lm"] != draw["lm+vision", "rs"]["lm"]
    assert draw["lm", "rs"] == Condition("lm", seed=1).neurons(selection, "rs")
    for (_, domain), neurons in draw.items():
        for site, pairs in neurons.items():
            assert sorted(l for l, _ in pairs) == sorted(l for l, _ in selection.sites[site].by_domain[domain])
            assert all(n < selection.sites[site].width for _, n in pairs)


# --- prompts, answers, likelihood ---------------------------------------------------------------


def test_interventions_through_the_answering_path():
    """Equivalences no intervention can meet by accident: x1 is no change, x0 and a zero mean are 0,
    and an image-only intervention is prefill-only anyway (decoding steps are text)."""
    processor = build_demo_processor(synthetic.vocabulary())
    model = build_demo_model(processor, seed=3).eval()
    selection = selection_for(model, {"rs": {"lm": [(layer, n) for layer in range(4) for n in range(0, 192, 3)]}})
    samples = _mixed_samples("rs", 4)
    settings = Settings(prompt="{question}", chat=True, batch_size=2, max_new_tokens=4)
    names = ["none", "lm", "lm@x1", "lm@x0", "lm@mean", "lm@image", "lm@image_prefill", "lm@text"]
    counts = extract_counts(model, processor, _mixed_samples("rs", 2), progress=False)
    with pytest.raises(ConditionError, match="'lm@mean' sets neurons to their mean activation"):
        run_ablation(model, processor, samples, selection, [Condition("lm@mean")], settings, "demo", progress=False)
    zero = dataclasses.replace(counts, sums={key: torch.zeros_like(value) for key, value in counts.sums.items()})
    records, _ = run_ablation(
        model, processor, samples, selection, [Condition(n) for n in names], settings, "demo", False, [zero]
    )
    out = {n: [(r["prediction"], r["reference_loglik"]) for r in records if r["condition"] == n] for n in names}
    assert all(len(answers) == 4 for answers in out.values())
    assert out["lm@x1"] == out["none"]
    assert out["lm@x0"] == out["lm"] and out["lm@mean"] == out["lm"]
    assert out["lm@image"] == out["lm@image_prefill"]
    logliks = {n: [loglik for _, loglik in answers] for n, answers in out.items()}
    assert len({tuple(logliks[n]) for n in ("none", "lm", "lm@image", "lm@text")}) == 4
    mean = next(r for r in records if r["condition"] == "lm@mean")
    assert mean["intervention"] == {"mode": "mean", "positions": "all", "prefill_only": False}
    assert mean["deactivated"] == 4 * 64


def test_prompts_from_templates():
    demo = build_demo_processor(synthetic.vocabulary())
    sample = Sample("m-1", "med", "which organ?", ["B"], b"", {"options": ["lung", "heart"], "question_type": "organ"})
    template = "{question}\n{options}\nType: {question_type}"
    assert build_prompt(demo, "llava_next", template, sample, chat=True) == (
        "USER: <image>\nwhich organ?\nA. lung\nB. heart\nType: organ ASSISTANT:"
    )
    plain = "Question: {question}"
    assert build_prompt(demo, "llava_next", plain, sample) == "<image>\nQuestion: which organ?"
    assert build_prompt(demo, "instructblip", plain, sample) == "Question: which organ?"
    with pytest.raises(InputError, match="m-1.*'role'"):
        build_prompt(demo, "llava_next", "{question} {role}", sample)
    with pytest.raises(InputError, match="question"):
        Settings(prompt="no field")
    with pytest.raises(InputError, match="no chat template"):
        build_prompt(build_tiny("llava")[1], "llava", plain, sample, chat=True)
    with pytest.raises(AblationError, match="decoding"):
        Settings(decoding="beam")


def _mixed_samples(domain: str, count: int) -> list[Sample]:
    questions = ["what colour are the roofs?", "is there a river?", "how many buildings are there in the picture?"]
    answers = ["red", "no", "2"]
    return [
        Sample(
            f"{domain}-{i}",
            domain,
            questions[i % 3],
            [answers[i % 3]],
            encode_png(noise_image(i, (48 + 16 * (i % 3), 40 + 8 * (i % 2)))),
        )
        for i in range(count)
    ]


def test_generation_does_not_depend_on_the_batch_size():
    processor = build_demo_processor(synthetic.vocabulary())
    model = build_demo_model(processor, seed=3).eval()
    sites = resolve_sites(model)
    neurons = {"rs": {"lm": [(1, n) for n in range(0, 176, 5)], "vision": [(0, n) for n in range(0, 128, 7)]}}
    selection = selection_for(model, neurons)
    samples = _mixed_samples("rs", 5)
    settings = {bs: Settings(prompt="{question}", chat=True, batch_size=bs, max_new_tokens=4) for bs in (1, 4)}
    outputs = {}
    for name in ("none", "lm+vision"):
        for bs in (1, 4):
            records, skipped = run_ablation(
                model, processor, samples, selection, [Condition(name)], settings[bs], "demo", progress=False
            )
            assert not skipped
            outputs[name, bs] = [(r["prediction"], r["reference_loglik"]) for r in records]
        assert [p for p, _ in outputs[name, 1]] == [p for p, _ in outputs[name, 4]]
        assert np.allclose([l for _, l in outputs[name, 1]], [l for _, l in outputs[name, 4]], atol=1e-5)
    assert [l for _, l in outputs["none", 1]] != [l for _, l in outputs["lm+vision", 1]]
    assert all(len(module._forward_hooks) == 0 for site in sites for module in site.modules)


def test_instructblip_answers_do_not_depend_on_the_batch_size():
    model, processor = build_tiny("instructblip")
    selection = selection_for(model, {"rs": {"qformer": [(0, 3)], "query": [(1, 8)], "lm": [(0, 5)]}})
    samples = _mixed_samples("rs", 3)
    outputs = {}
    for bs in (1, 3):
        records, _ = run_ablation(
            model,
            processor,
            samples,
            selection,
            [Condition("qformer+query+lm")],
            Settings(chat=False, batch_size=bs, max_new_tokens=3),
            "tiny",
            progress=False,
        )
        outputs[bs] = records
    assert [r["prediction"] for r in outputs[1]] == [r["prediction"] for r in outputs[3]]
    assert np.allclose(
        [r["reference_loglik"] for r in outputs[1]], [r["reference_loglik"] for r in outputs[3]], atol=1e-5
    )
    inputs = encode(model, processor, [noise_image(0)] * 3, [s.question for s in samples], LEFT).inputs
    mask = inputs["qformer_attention_mask"]
    assert (mask == 0).any()
    assert torch.equal(mask, mask.sort(dim=1, descending=True, stable=True).values)  # instructions padded on the right


def test_compat_sampling_is_seeded_and_leaves_the_global_rng(llava_next):
    model, processor, selection = llava_next
    samples = _mixed_samples("rs", 3)
    runs = []
    state = torch.random.get_rng_state()
    for seed in (5, 5, 6):
        settings = Settings(chat=False, decoding="compat", seed=seed, max_new_tokens=6, likelihood=False)
        records, _ = run_ablation(
            model, processor, samples, selection, [Condition("lm")], settings, "tiny", progress=False
        )
        runs.append([r["prediction"] for r in records])
        assert records[0]["reference_loglik"] is None and records[0]["settings"]["temperature"] == 0.9
    assert torch.equal(state, torch.random.get_rng_state())
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_log_likelihood_equals_a_direct_computation(llava_next):
    model, processor, _ = llava_next
    prompts = [
        image_prompt("llava_next", "<image>\nWhat colour is the car?"),
        image_prompt("llava_next", "<image>\nHow many people are in the picture on the left?"),
    ]
    images = [noise_image(0), noise_image(1, (56, 30))]
    answers = ["red car", "two"]
    result = answer_loglik(model, processor, prompts, images, answers, batch_size=2, progress=False)
    # direct: one sample alone, no padding, every position's logits
    full = processor(images=[images[0]], text=[prompts[0] + " red car"], return_tensors="pt")
    answer_ids = processor.tokenizer(" red car", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(**full).logits[0].double()
    ids = full["input_ids"][0]
    start = len(ids) - len(answer_ids)
    assert ids[start:].tolist() == answer_ids
    expected = sum(torch.log_softmax(logits[t - 1], -1)[ids[t]].item() for t in range(start, len(ids))) / len(
        answer_ids
    )
    assert result[0][1] == len(answer_ids) == 2
    assert result[0][0] == pytest.approx(expected, abs=1e-5)
    assert result[1][1] == 1
    assert reference_answer(["a", "b", "b", "a", "c"]) == "a" and reference_answer(["x", "y", "y"]) == "y"


def _mean_loglik(logits: torch.Tensor, ids: torch.Tensor, positions) -> float:
    """Mean over ``positions`` of log p(ids[t] | logits[t - 1]), from one unpadded row's logits."""
    logp = torch.log_softmax(logits.double(), -1)
    return sum(logp[t - 1, ids[t]].item() for t in positions) / len(positions)


LIKELIHOOD_QUESTIONS = ["What colour is the car?", "How many people are in the picture on the left?"]
LIKELIHOOD_ANSWERS = ["red car", "two"]


def test_instructblip_log_likelihood_gives_the_qformer_the_prompt_alone():
    """The Q-Former's query tokens are computed from the prompt as during generation, never from
    the prompt with the scored answer appended."""
    model, processor = build_tiny("instructblip")
    prompts = [image_prompt("instructblip", f"<image>\n{q}") for q in LIKELIHOOD_QUESTIONS]
    images = [noise_image(0), noise_image(1, (56, 30))]
    result = answer_loglik(model, processor, prompts, images, LIKELIHOOD_ANSWERS, batch_size=2, progress=False)
    for row, (prompt, answer) in enumerate(zip(prompts, LIKELIHOOD_ANSWERS)):
        alone = processor(images=[images[row]], text=[prompt], return_tensors="pt")  # what generation sees
        full = processor(images=[images[row]], text=[f"{prompt} {answer}"], return_tensors="pt")
        with torch.no_grad():
            logits = model(
                pixel_values=alone["pixel_values"],
                qformer_input_ids=alone["qformer_input_ids"],
                qformer_attention_mask=alone["qformer_attention_mask"],
                input_ids=full["input_ids"],
                attention_mask=full["attention_mask"],
            ).logits[0]
        count = len(processor.tokenizer(f" {answer}", add_special_tokens=False)["input_ids"])
        ids = full["input_ids"][0]
        assert result[row][1] == count
        assert result[row][0] == pytest.approx(_mean_loglik(logits, ids, range(len(ids) - count, len(ids))), abs=1e-5)


def test_paligemma_log_likelihood_scores_the_answer_as_the_causal_suffix():
    """PaliGemma's prompt is a bidirectional prefix: the answer goes in as the processor's suffix
    (causal, targets aligned), as the model's own training path builds it."""
    model, processor = build_tiny("paligemma")
    prompts = [image_prompt("paligemma", f"<image>\n{q}") for q in LIKELIHOOD_QUESTIONS]
    images = [noise_image(0), noise_image(1, (56, 30))]
    result = answer_loglik(model, processor, prompts, images, LIKELIHOOD_ANSWERS, batch_size=2, progress=False)
    for row, (prompt, answer) in enumerate(zip(prompts, LIKELIHOOD_ANSWERS)):
        own = processor(images=[images[row]], text=[prompt], suffix=[answer], return_tensors="pt")
        labels = own.pop("labels")[0]
        with torch.no_grad():
            logits = model(**own).logits[0]
        scored = (labels != -100).nonzero().flatten().tolist()[:-1]  # the answer; its closing </s> is not scored
        assert result[row][1] == len(scored) == len(processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
        assert result[row][0] == pytest.approx(_mean_loglik(logits, own["input_ids"][0], scored), abs=1e-5)


def test_a_checkpoints_generation_config_cannot_change_the_answers():
    """Greedy decoding is pinned: beam search, penalties and sampling defaults in the model's
    generation config leave the answers as they are; the settings used are recorded."""
    model, processor = build_tiny("llava_next")
    selection = selection_for(model, NEURONS)
    samples = _mixed_samples("rs", 4)
    settings = Settings(chat=False, max_new_tokens=6, likelihood=False)
    clean, _ = run_ablation(model, processor, samples, selection, [Condition("none")], settings, "t", progress=False)
    config = model.generation_config
    config.num_beams, config.repetition_penalty, config.no_repeat_ngram_size = 3, 5.0, 1
    config.do_sample, config.temperature, config.top_k = True, 5.0, 3
    try:
        odd, _ = run_ablation(model, processor, samples, selection, [Condition("none")], settings, "t", progress=False)
    finally:
        model.generation_config = build_tiny("llava_next")[0].generation_config
    assert [r["prediction"] for r in odd] == [r["prediction"] for r in clean]
    generation = odd[0]["generation"]
    assert (generation["do_sample"], generation["num_beams"], generation["repetition_penalty"]) == (False, 1, 1.0)
    assert generation["max_new_tokens"] == 6 and odd[0]["dtype"] == "float32"


# --- the command line ---------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path):
    model_dir = save_tiny("llava_next", tmp_path / "model")
    model, _ = build_tiny("llava_next")
    neurons = selection_for(model, NEURONS).save(tmp_path / "neurons.json")
    samples = synthetic.generate("rs", "eval", 3, seed=0)
    samples.append(Sample("rs-broken", "rs", "is there a river?", ["no"], b"not an image", {}))
    data = tmp_path / "rs.parquet"
    write_samples(samples, data)
    common = [
        "--model",
        str(model_dir),
        "--neurons",
        str(neurons),
        "--data",
        str(data),
        "--max-new-tokens",
        "3",
        "--device",
        "cpu",
        "--name",
        "tiny",
        "--no-chat",
        "--batch-size",
        "1",  # shards are made of whole batches: of one sample here, so the controls split 1 + 2
    ]
    # one job for the domain's own sets, the controls in two shards, and the controls again in one job
    jobs = {
        "own": (["none/own", "lm/own", "all/own"], "1/1"),
        "controls.1": (["lm/random1", "lm/random2", "all/from_med"], "1/2"),
        "controls.2": (["lm/random1", "lm/random2", "all/from_med"], "2/2"),
        "controls.whole": (["lm/random1", "lm/random2", "all/from_med"], "1/1"),
    }
    for name, (runs, part) in jobs.items():
        out = tmp_path / "jobs" / f"{name}.jsonl"
        assert main(["ablate", *common, "--runs", *runs, "--shard", part, "--out", str(out)]) == 0
    bundles = [tmp_path / "jobs" / f"{name}.jsonl" for name in ("own", "controls.1", "controls.2")]
    answers, whole = tmp_path / "answers" / "rs", tmp_path / "whole"
    assert main(["gather-answers", *map(str, bundles), "--out-dir", str(answers)]) == 0
    assert main(["gather-answers", str(tmp_path / "jobs" / "controls.whole.jsonl"), "--out-dir", str(whole)]) == 0
    files = sorted(path.relative_to(answers).as_posix() for path in answers.rglob("*.jsonl"))
    assert files == [
        "all/from_med.jsonl",
        "all/own.jsonl",
        "lm/own.jsonl",
        "lm/random1.jsonl",
        "lm/random2.jsonl",
        "none/own.jsonl",
    ]
    assert [len(read_answers(tmp_path / "jobs" / f"controls.{i}.jsonl")) for i in (1, 2)] == [3 * 1, 3 * 2]
    for run in ("lm/random1", "lm/random2", "all/from_med"):  # two shards gather into what one job writes
        assert (answers / f"{run}.jsonl").read_bytes() == (whole / f"{run}.jsonl").read_bytes(), run
    records = read_answers(answers / "lm/own.jsonl")
    assert [r["sample_id"] for r in records] == ["rs-eval-00000", "rs-eval-00001", "rs-eval-00002"]  # broken skipped
    first = records[0]
    assert (first["model"], first["condition"], first["control"], first["seed"], first["domain"]) == (
        "tiny",
        "lm",
        "domain",
        None,
        "rs",
    )
    assert first["deactivated"] == 3 and first["sites"] == ["lm"] and first["settings"]["decoding"] == "greedy"
    assert first["prompt"].startswith("<image>") and isinstance(first["reference_loglik"], float)
    assert read_answers(answers / "lm/random1.jsonl")[0]["control"] == "random"
    assert read_answers(answers / "all/from_med.jsonl")[0]["source_domain"] == "med"
    outputs = [tmp_path / "answers"]  # score reads the folder

    scores, figures = tmp_path / "scores.csv", tmp_path / "figures"
    assert (
        main(
            [
                "score",
                *map(str, outputs),
                "--metrics",
                "rs=exact_match",
                "--out",
                str(scores),
                "--figures",
                str(figures),
                "--n-boot",
                "100",
            ]
        )
        == 0
    )
    table = pd.read_csv(scores)
    assert len(table) == 12 and set(table["metric"]) == {"exact_match", LOGLIK}
    assert (table.loc[table["condition"] == "none", "delta"] == 0).all()
    random = pd.read_csv(tmp_path / "scores_random.csv")
    assert set(random["seeds"]) == {2}
    for stem in ("tiny_ablation_scores", "tiny_ablation_loglik", "tiny_cross_domain_all"):
        assert (figures / f"{stem}.png").stat().st_size > 0 and (figures / f"{stem}.pdf").exists()
