"""Neuron sets in LAPE's format: imported onto a model's site, checked against its shape, ablated."""

from __future__ import annotations

import pytest
import torch

from mmneuron.cli import main
from mmneuron.conditions import Condition
from mmneuron.models.loading import model_sites
from mmneuron.models.sites import resolve_sites
from mmneuron.models.tiny import TINY_ARCHITECTURES, build_tiny, save_tiny
from mmneuron.selection import Selection


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    folder = save_tiny("llava_next", tmp_path_factory.mktemp("llava") / "model")
    lm = next(site for site in resolve_sites(build_tiny("llava_next")[0]) if site.name == "lm")
    return folder, lm.layers, lm.width


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_site_shapes_from_the_config_alone_match_the_loaded_model(tmp_path, arch):
    """The meta-device build reads no weight, yet gives every site's layers, width and inert layers."""
    folder = save_tiny(arch, tmp_path / arch)
    loaded = [(s.name, s.layers, s.width, s.inert_layers) for s in resolve_sites(build_tiny(arch)[0])]
    assert [(s.name, s.layers, s.width, s.inert_layers) for s in model_sites(folder)] == loaded


def lape_sets(layers, width):
    """Three sets as LAPE saves them; the second has no neuron at all, the third repeats one."""
    en = [torch.tensor([layer, width - 1 - layer], dtype=torch.long) for layer in range(layers)]
    none = [torch.tensor([], dtype=torch.long) for _ in range(layers)]
    fr = [torch.tensor([3, 3, 1] if layer == 1 else [], dtype=torch.long) for layer in range(layers)]
    return [en, none, fr]


def test_a_lape_file_becomes_a_neurons_file_with_an_empty_set_kept(tmp_path, llava):
    folder, layers, width = llava
    sets = lape_sets(layers, width)
    torch.save(sets, tmp_path / "lang.pt")
    out = tmp_path / "neurons.json"
    argv = ["import-neurons", str(tmp_path / "lang.pt"), "--model", str(folder), "--site", "lm"]
    assert main([*argv, "--names", "en", "none", "fr", "--name", "tiny", "--out", str(out)]) == 0
    selection = Selection.load(out)
    expected = {
        name: sorted({(layer, int(n)) for layer, tensor in enumerate(per_layer) for n in tensor})
        for name, per_layer in zip(["en", "none", "fr"], sets)
    }
    site = selection.sites["lm"]
    assert selection.method == "external" and selection.model == "tiny" and selection.domains == ["en", "none", "fr"]
    assert selection.label == "external_lang"  # the method of its answers: the file's stem unless --label
    assert site.by_domain == expected and expected["none"] == [] and expected["fr"] == [(1, 1), (1, 3)]
    assert (site.layers, site.width, site.k) == (layers, width, len(set(expected["en"]) | set(expected["fr"])))
    assert selection.parameters["names"] == ["en", "none", "fr"] and len(selection.parameters["sha256"]) == 64
    # the ablation reads the sets like any domain's: `lm/from_fr` on any evaluation domain
    assert Condition("lm", source="fr").neurons(selection, "rs") == {"lm": [(1, 1), (1, 3)]}
    assert Condition("lm", source="none").neurons(selection, "rs") == {"lm": []}
    # and exports them back as LAPE's format, duplicates gone
    back = selection.lape("lm")
    assert [[t.tolist() for t in per_layer] for per_layer in back] == [
        [sorted(set(t.tolist())) for t in per_layer] for per_layer in sets
    ]


@pytest.mark.parametrize(
    "change, names, message",
    [
        ("layers", ["en", "none", "fr"], "set 'en' has {more} layers, but site 'lm' of tiny has {layers}"),
        (
            "width",
            ["en", "none", "fr"],
            "set 'fr', layer 1: neuron index {width} does not fit the site's width {width}",
        ),
        ("float", ["en", "none", "fr"], "set 'en', layer 0: expected a 1-D tensor of neuron indices"),
        (None, ["en", "fr"], "holds 3 neuron sets, but 2 names were given"),
        (None, ["en", "en", "fr"], "repeat a name"),
        (None, ["en", "../x", "fr"], "set name '../x' is not a plain name"),
        ("garbage", ["en", "none", "fr"], "not a torch.save file of neuron sets"),
        ("dict", ["en", "none", "fr"], "expected a list of neuron sets"),
    ],
)
def test_sets_that_do_not_fit_the_site_are_one_clear_line(tmp_path, llava, capsys, change, names, message):
    folder, layers, width = llava
    sets = lape_sets(layers, width)
    path = tmp_path / "lang.pt"
    if change == "layers":
        sets[0].append(torch.tensor([0]))
    elif change == "width":
        sets[2][1] = torch.tensor([width])
    elif change == "float":
        sets[0][0] = sets[0][0].float()
    torch.save({"en": sets[0]} if change == "dict" else sets, path)
    if change == "garbage":
        path.write_bytes(b"not a torch file")
    out = tmp_path / "neurons.json"
    argv = ["import-neurons", str(path), "--model", str(folder), "--site", "lm", "--name", "tiny"]
    assert main([*argv, "--names", *names, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message.format(more=layers + 1, layers=layers, width=width) in err and str(path) in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_an_unknown_site_and_a_missing_file_name_what_is_wrong(tmp_path, llava, capsys):
    folder, layers, width = llava
    torch.save(lape_sets(layers, width), tmp_path / "lang.pt")
    base = ["import-neurons", "--model", str(folder), "--names", "a", "b", "c", "--out", str(tmp_path / "n.json")]
    assert main([*base, str(tmp_path / "lang.pt"), "--site", "qformer"]) == 1
    assert "--site qformer: the model" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "missing.pt"), "--site", "lm"]) == 1
    assert f"neuron sets file not found: {tmp_path / 'missing.pt'}" in capsys.readouterr().err
