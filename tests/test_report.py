"""The report's verdicts on constructed tables (against hand-computed verdicts), its command's errors, and
the report of the small real workflow run opened in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess

import apt_packages
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmneuron.report import claims
from mmneuron.report.build import config_digest


def neurons(by_domain: dict, layers=4, width=100, inert=()) -> dict:
    entry = {"by_domain": by_domain, "layers": layers, "width": width, "inert_layers": list(inert)}
    return {"method": "dape", "parameters": {"top_rate": 0.01}, "sites": {"lm": entry}}


def test_neuron_share_is_the_union_over_domains_per_site():
    # 400 neurons; 3 distinct (one shared by two domains): 0.75%, under 1%
    three = neurons({"a": [[0, 1], [1, 2]], "b": [[1, 2], [3, 3]]})
    verdict = claims.neuron_share(three)
    assert verdict.verdict == claims.SUPPORTED
    assert verdict.evidence.loc[0, "neurons"] == 3 and verdict.evidence.loc[0, "share"] == pytest.approx(0.0075)
    four = neurons({"a": [[0, 1], [1, 2]], "b": [[2, 2], [3, 3]]})  # 4 of 400 = 1%: not under
    assert claims.neuron_share(four).verdict == claims.NOT_SUPPORTED
    assert claims.neuron_share(None).verdict == claims.NOT_TESTABLE


def test_layer_distribution_p_value_against_hand_computed_cases():
    # an even spread has chi-square 0: every draw is at least as extreme, p = 1
    assert claims._uniform_p_value(np.array([5.0, 5, 5, 5]), seed=0) == 1.0
    # all 20 in one of 4 layers: a draw as extreme has probability 4 * 4**-20 (~4e-12): none of the draws
    assert claims._uniform_p_value(np.array([20.0, 0, 0, 0]), seed=0) == 1 / (1 + claims.LAYER_DRAWS)
    concentrated = neurons({"a": [[0, n] for n in range(20)]})
    assert claims.layer_distribution(concentrated).verdict == claims.SUPPORTED
    even = neurons({"a": [[layer, n] for layer in range(4) for n in range(5)]})
    assert claims.layer_distribution(even).verdict == claims.NOT_SUPPORTED
    assert claims.layer_distribution(neurons({"a": [[0, 1], [0, 2]]})).verdict == claims.NOT_TESTABLE
    # inert layers are no part of the spread: 20 neurons over the 2 live layers, 10 each, is even
    live = neurons({"a": [[layer, n] for layer in (1, 3) for n in range(10)]}, inert=(0, 2))
    verdict = claims.layer_distribution(live)
    assert verdict.verdict == claims.NOT_SUPPORTED and list(verdict.evidence["layer"]) == [1, 3]


def scores(deltas: dict) -> pd.DataFrame:
    rows = [
        {"method": "dape", "condition": "none", "control": "domain", "source_domain": "x", "domain": "x"}
        | {"subset": "all", "metric": "exact_match", "n": 10, "delta": 0.0, "delta_low": 0.0, "delta_high": 0.0}
    ]
    for (condition, domain), delta in deltas.items():
        base = {"method": "dape", "condition": condition, "control": "domain", "source_domain": domain}
        base |= {"domain": domain, "subset": "all", "n": 10, "delta_low": delta - 0.1, "delta_high": delta + 0.1}
        rows.append(base | {"metric": "exact_match", "delta": delta})
        rows.append(base | {"metric": claims.LOGLIK, "delta": -5.0})  # never read as an accuracy
        rows.append(base | {"metric": "exact_match", "delta": -0.9, "method": "margin"})  # another method's
    return pd.DataFrame(rows)


def perturbation(strength: dict) -> pd.DataFrame:
    rows = []
    for (condition, domain), (rel_l2, deactivated) in strength.items():
        for layer, scale in enumerate((0.5, 1.0)):
            rows.append(
                {"condition": condition, "control": "domain", "domain": domain, "scope": "all", "layer": layer}
                | {"rel_l2_mean": rel_l2 * scale, "cosine_mean": 1 - rel_l2, "deactivated": deactivated}
            )
    return pd.DataFrame(rows)


def test_small_accuracy_change_verdicts():
    perturbed = perturbation({("lm", "x"): (0.2, 5), ("lm", "y"): (0.3, 0)})
    verdict = claims.small_accuracy_change(scores({("lm", "x"): -0.05, ("lm", "y"): -0.5}), perturbed)
    # y's set is empty (nothing deactivated): no evidence, so the -0.5 there does not count
    assert verdict.verdict == claims.SUPPORTED and list(verdict.evidence["domain"]) == ["x"]
    assert verdict.evidence.loc[0, "max_rel_l2"] == pytest.approx(0.2)
    too_large = claims.small_accuracy_change(scores({("lm", "x"): -0.15}), perturbed)
    assert too_large.verdict == claims.NOT_SUPPORTED
    unperturbed = perturbation({("lm", "x"): (0.05, 5)})
    assert claims.small_accuracy_change(scores({("lm", "x"): -0.05}), unperturbed).verdict == claims.NOT_SUPPORTED
    assert claims.small_accuracy_change(scores({("lm", "x"): -0.05}), None).verdict == claims.NOT_TESTABLE
    assert claims.small_accuracy_change(None, perturbed).verdict == claims.NOT_TESTABLE
    empty = perturbation({("lm", "x"): (0.2, 0)})
    assert claims.small_accuracy_change(scores({("lm", "x"): -0.05}), empty).verdict == claims.NOT_TESTABLE


def test_three_stages_and_top_probability_verdicts():
    found = {"scope": "image", "layers": 32, "alignment_last": 3, "processing_last": 20, "note": ""}
    stages = pd.DataFrame([found | {"domain": "x", "token_selection_first": 21}])
    assert claims.three_stages(stages).verdict == claims.SUPPORTED
    missing = pd.concat([stages, pd.DataFrame([found | {"domain": "y", "token_selection_first": np.nan}])])
    assert claims.three_stages(missing).verdict == claims.NOT_SUPPORTED
    assert claims.three_stages(stages.assign(scope="text")).verdict == claims.NOT_TESTABLE
    lens = pd.DataFrame(
        {"domain": ["x", "x", "y"], "scope": ["image", "image", "text"], "top_prob_mean": [0.2, 0.39, 0.9]}
    )
    assert claims.image_top_probability(lens).verdict == claims.SUPPORTED  # text positions do not count
    assert claims.image_top_probability(lens.assign(top_prob_mean=0.4)).verdict == claims.NOT_SUPPORTED
    assert claims.image_top_probability(None).verdict == claims.NOT_TESTABLE


def test_random_band_sits_beside_each_own_effect():
    random = pd.DataFrame(
        [
            {"condition": "lm", "source_domain": "x", "domain": "x", "subset": "all", "metric": "exact_match"}
            | {"seeds": 2, "delta_min": -0.02, "delta_max": 0.01, "p_empirical": 0.33},
            {"condition": "lm", "source_domain": "y", "domain": "x", "subset": "all", "metric": "exact_match"}
            | {"seeds": 2, "delta_min": -0.5, "delta_max": 0.5, "p_empirical": 1.0},  # cross-domain: not x's band
        ]
    )
    table = claims.random_comparison(scores({("lm", "x"): -0.05}), random)
    row = table[table["metric"] == "exact_match"].iloc[0]
    assert (row["delta"], row["random_min"], row["random_max"], row["seeds"]) == (-0.05, -0.02, 0.01, 2)


def test_config_digest_ignores_key_order():
    assert config_digest({"a": 1, "b": {"c": 2}}) == config_digest({"b": {"c": 2}, "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})


# The report of the small real run (tests/workflow/config.yaml), made by the workflow's own `report` rule.

SECTIONS = ("run", "model-demo", "claims-of-the-paper", "neuron-selection", "logit-lens", "deactivation")


@pytest.mark.slow
def test_report_of_the_small_run_has_every_figure_and_a_verdict_per_claim(finished_run):
    results = finished_run[0] / "results"
    markdown = (results / "report.md").read_text()
    figures = sorted(path.relative_to(results).as_posix() for path in (results / "demo").rglob("*.png"))
    assert figures and all(f"]({figure})" in markdown for figure in figures)  # every analysis figure
    verdicts = [line for line in markdown.splitlines() if line.startswith("**") and " - " in line]
    assert len(verdicts) == 5 and all(line.split("**")[1] in claims.VERDICTS for line in verdicts)
    for section in SECTIONS:
        assert f'id="{section}"' in (results / "report.html").read_text()


PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({src: i.getAttribute("src"), width: i.naturalWidth}));
  const sections = [...document.querySelectorAll("section")].map(s => ({id: s.id, height: s.offsetHeight}));
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({images, sections});
  document.body.appendChild(probe);
});
</script>"""


@pytest.fixture(scope="module")
def chromium():
    try:
        apt_packages.install(("chromium",), ("chromium",))
    except apt_packages.Unavailable as reason:
        pytest.skip(f"headless Chromium is not available: {reason}")
    return apt_packages.which("chromium")


def headless(chromium, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--hide-scrollbars"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(finished_run, chromium, tmp_path):
    results = tmp_path / "results"  # a copy: the report must work wherever results/ is moved
    shutil.copytree(finished_run[0] / "results", results)
    page = results / "report.html"
    probe = results / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = headless(chromium, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    start = dom.stdout.index('<pre id="probe">') + len('<pre id="probe">')
    found = json.loads(dom.stdout[start : dom.stdout.index("</pre>", start)].replace("&quot;", '"'))
    assert found["images"], "no images in the report"
    assert [image for image in found["images"] if image["width"] == 0] == []  # every image loaded
    heights = {section["id"]: section["height"] for section in found["sections"]}
    assert all(heights.get(section, 0) > 0 for section in SECTIONS), heights
    shot = tmp_path / "report.png"
    taken = headless(chromium, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 5  # text and figures, not a blank page
    print(f"screenshot: {shot}")
