"""One error path: every subcommand given a missing file, a corrupt file or an invalid value prints
one line naming the command and the file, sample or key, and exits non-zero - never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import selection_for

from mmneuron.cli import main
from mmneuron.data import synthetic
from mmneuron.data.samples import write_samples
from mmneuron.models.tiny import build_tiny, save_tiny


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    save_tiny("llava_next", root / "model")
    data = root / "rs.parquet"
    write_samples(synthetic.generate("rs", "eval", 2), data)
    selection_for(build_tiny("llava_next")[0], {"rs": {"lm": [(0, 1)]}}).save(root / "neurons.json")
    corrupt_model = root / "corrupt-model"
    corrupt_model.mkdir()
    (corrupt_model / "config.json").write_text("{not json")
    (root / "bad-listing").mkdir()
    (root / "bad-listing" / "SHA256SUMS").write_text("not a digest line\n")
    (root / "results" / "demo" / "ablation").mkdir(parents=True)
    (root / "results" / "demo" / "ablation" / "scores.csv").write_text("condition,domain\nlm,rs\n")
    for name in ("corrupt.parquet", "corrupt.safetensors", "corrupt.json", "corrupt.jsonl"):
        (root / name).write_bytes(b"\x00\x01 not what it claims to be {")
    return root


PREPARE = "prepare folder --split eval --domain d --out {root}/p.parquet"
REPORT = "report --models demo --markdown {root}/results/r.md --html {root}/results/r.html"

# command line (with {root} for the fixture folder) -> what the one line must name
CASES = {
    "prepare": [
        ("prepare nosuch --split eval --n 1 --out {root}/p.parquet", "nosuch"),
        (PREPARE + " --n 1 --root {root}/absent --questions {root}/q.jsonl", "absent"),
        (PREPARE + " --n 0 --root {root} --questions {root}/q.jsonl", "--n"),
    ],
    "report": [
        (REPORT + " --results {root}/missing --config-json {{}}", "missing"),
        (REPORT + " --results {root}/results --config {root}/corrupt.json", "corrupt.json"),
        (REPORT + " --results {root}/results --config-json {{}}", "scores.csv"),
    ],
    "make-data": [
        ("make-data --domain rs --sizes train=x --out-dir {root}/out", "--sizes"),
        ("make-data --domain rs --sizes train=2 --image-size 0 --out-dir {root}/out", "--image-size"),
        ("make-data --domain xx --sizes train=2 --out-dir {root}/out", "--domain"),
    ],
    "contact-sheet": [
        ("contact-sheet {root}/missing.parquet --out {root}/sheet.png", "missing.parquet"),
        ("contact-sheet {root}/corrupt.parquet --out {root}/sheet.png", "corrupt.parquet"),
        ("contact-sheet {root}/rs.parquet --per-domain 0 --out {root}/sheet.png", "--per-domain"),
    ],
    "train-demo": [
        ("train-demo --train {root}/missing.parquet --eval {root}/rs.parquet --out {root}/m", "missing.parquet"),
        ("train-demo --train {root}/corrupt.parquet --eval {root}/rs.parquet --out {root}/m", "corrupt.parquet"),
        ("train-demo --train {root}/rs.parquet --eval {root}/rs.parquet --out {root}/m --steps 0", "--steps"),
    ],
    "install-model": [
        ("install-model --from {root}/missing-model --out {root}/m", "missing-model"),
        ("install-model --from {root}/model --out {root}/m", "SHA256SUMS"),
        ("install-model --from {root}/bad-listing --out {root}/m", "bad-listing"),
    ],
    "extract": [
        ("extract --model {root}/missing-model --data {root}/rs.parquet --out {root}/c.safetensors", "missing-model"),
        ("extract --model {root}/corrupt-model --data {root}/rs.parquet --out {root}/c.safetensors", "corrupt-model"),
        ("extract --model {root}/model --data {root}/corrupt.parquet --out {root}/c.safetensors", "corrupt.parquet"),
        ("extract --model {root}/model --data {root}/rs.parquet --out {root}/c.safetensors --shard 3/2", "3/2"),
        (
            "extract --model {root}/model --data {root}/rs.parquet --out {root}/c.safetensors --batch-size 0",
            "--batch-size",
        ),
        ("extract --model {root}/model --data {root}/rs.parquet --out {root}/c.safetensors --sites qformer", "qformer"),
    ],
    "merge": [
        ("merge {root}/missing.safetensors --out {root}/m.safetensors", "missing.safetensors"),
        ("merge {root}/corrupt.safetensors --out {root}/m.safetensors", "corrupt.safetensors"),
    ],
    "select": [
        ("select --counts {root}/missing.safetensors --out {root}/n.json", "missing.safetensors"),
        ("select --counts {root}/corrupt.safetensors --out {root}/n.json", "corrupt.safetensors"),
        ("select --counts {root}/corrupt.safetensors --out {root}/n.json --top-rate 2", "--top-rate"),
        ("select --counts {root}/corrupt.safetensors --out {root}/n.json --method nope", "--method"),
        ("select --counts {root}/corrupt.safetensors --out {root}/n.json --miner-weights mean", "--miner-weights"),
    ],
    "import-neurons": [
        ("import-neurons {root}/missing.pt --model {root}/model --site lm --names a --out {root}/n.json", "missing.pt"),
        ("import-neurons {root}/corrupt.json --model {root}/model --site lm --names a --out {root}/n.json", "corrupt"),
        ("import-neurons {root}/corrupt.json --model {root}/absent --site lm --names a --out {root}/n.json", "absent"),
        (
            "import-neurons {root}/corrupt.json --model {root}/corrupt-model --site lm --names a --out {root}/n",
            "config",
        ),
    ],
    "compare-methods": [
        ("compare-methods --neurons dape={root}/missing.json --out {root}/o.csv", "missing.json"),
        ("compare-methods --neurons margin={root}/neurons.json --out {root}/o.csv", "margin"),
        ("compare-methods --neurons {root}/neurons.json --out {root}/o.csv", "METHOD=FILE"),
    ],
    "sample-curve": [
        ("sample-curve --shards {root}/missing.safetensors --out {root}/c.csv", "missing.safetensors"),
        ("sample-curve --shards {root}/corrupt.safetensors --out {root}/c.csv", "corrupt.safetensors"),
        ("sample-curve --shards {root}/corrupt.safetensors --out {root}/c.csv --max-shards 0", "--max-shards"),
    ],
    "lens": [
        ("lens --model {root}/missing-model --data {root}/rs.parquet --out {root}/l.csv", "missing-model"),
        ("lens --model {root}/model --data {root}/corrupt.parquet --out {root}/l.csv", "corrupt.parquet"),
        ("lens --model {root}/model --data {root}/rs.parquet --out {root}/l.csv --prompt {{q}}", "{question}"),
        ("lens --model {root}/model --data {root}/rs.parquet --out {root}/l.csv --chunk-size 0", "--chunk-size"),
    ],
    "ablate": [
        (
            "ablate --model {root}/model --neurons {root}/missing.json --data {root}/rs.parquet --runs lm/own "
            "--out {root}/a.jsonl",
            "missing.json",
        ),
        (
            "ablate --model {root}/model --neurons {root}/corrupt.json --data {root}/rs.parquet --runs lm/own "
            "--out {root}/a.jsonl",
            "corrupt.json",
        ),
        (
            "ablate --model {root}/model --neurons {root}/neurons.json --data {root}/rs.parquet --runs qformer/own "
            "--no-chat --out {root}/a.jsonl",
            "qformer",
        ),
        (
            "ablate --model {root}/model --neurons {root}/neurons.json --data {root}/rs.parquet --runs lm/own "
            "--chat --out {root}/a.jsonl",
            "chat template",
        ),
    ],
    "gather-answers": [
        ("gather-answers {root}/missing.jsonl --out-dir {root}/g", "missing.jsonl"),
        ("gather-answers {root}/corrupt.jsonl --out-dir {root}/g", "corrupt.jsonl"),
        ("gather-answers {root}/model/config.json --out-dir {root}/g", "config.json"),
    ],
    "score": [
        ("score {root}/missing.jsonl --metrics rs=exact_match --out {root}/s.csv", "missing.jsonl"),
        ("score {root}/corrupt.jsonl --metrics rs=exact_match --out {root}/s.csv", "corrupt.jsonl"),
        ("score {root}/corrupt.jsonl --metrics rs --out {root}/s.csv", "DOMAIN=METRIC"),
    ],
    "perturb": [
        (
            "perturb --model {root}/model --neurons {root}/missing.json --data {root}/rs.parquet --conditions lm "
            "--out {root}/p.csv",
            "missing.json",
        ),
        (
            "perturb --model {root}/model --neurons {root}/neurons.json --data {root}/corrupt.parquet "
            "--conditions lm --out {root}/p.csv",
            "corrupt.parquet",
        ),
        (
            "perturb --model {root}/model --neurons {root}/neurons.json --data {root}/rs.parquet --conditions lm+lm "
            "--no-chat --out {root}/p.csv",
            "lm+lm",
        ),
    ],
}


@pytest.mark.parametrize(
    "command, line, named",
    [(command, line, named) for command, cases in CASES.items() for line, named in cases],
    ids=[f"{command}-{i}" for command, cases in CASES.items() for i in range(len(cases))],
)
def test_bad_input_is_one_line_naming_it(files, capsys, command, line, named):
    argv = line.format(root=files).split()
    try:
        code = main(argv)
    except SystemExit as exit:  # the argument parser's own refusal
        code = exit.code
    err = capsys.readouterr().err
    assert code not in (0, None)
    assert "Traceback" not in err
    ours = [text for text in err.splitlines() if text.startswith("mmneuron")]
    assert len(ours) == 1, err
    assert ours[0].startswith((f"mmneuron {command}: ", f"mmneuron {command} ")) and named in ours[0], ours[0]


def test_every_subcommand_is_covered():
    listed = subprocess.run([sys.executable, "-m", "mmneuron", "--help"], capture_output=True, text=True).stdout
    commands = {name.replace("_", "-") for name in __import__("mmneuron.cli").cli.COMMANDS}
    assert commands == set(CASES) and all(command in listed for command in commands)


def test_a_user_error_exits_non_zero_with_one_line_in_a_real_process(files):
    result = subprocess.run(
        [sys.executable, "-m", "mmneuron", "merge", str(files / "corrupt.safetensors"), "--out", str(files / "x")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mmneuron merge: ")


def test_help_imports_no_heavy_library():
    """`mmneuron --help` starts without torch, transformers, pandas or matplotlib (they take seconds)."""
    code = (
        "import sys; from mmneuron.cli import build_parser; build_parser();"
        "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
