"""The pmc_vqa source on fixtures in the hub repository's layout: the CSVs with their real column
names (letter-prefixed choices) and the figures in images.zip (nested under figures/) or extracted."""

from __future__ import annotations

import csv
import hashlib
import random
import zipfile
from pathlib import Path

import yaml
from source_fixtures import CORRUPT, image_bytes, prepare

from mmneuron.cli import main
from mmneuron.models.inputs import build_prompt
from mmneuron.vqa.metrics import option_accuracy, option_letters

REPO_ROOT = Path(__file__).resolve().parents[1]
# The columns of test.csv / test_clean.csv; train.csv also carries Caption (DATASETS.md 1.2).
COLUMNS = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]
TRAIN_COLUMNS = ["Figure_path", "Caption", *COLUMNS[1:]]


def entries(count, tag="t", figures=None, start=0):
    """Rows with figures PMC{start+i}_F1.jpg (or ``figures(i)``): four letter-prefixed choices, the
    correct one at a letter that varies with i, Answer its text."""
    figures = figures or (lambda i: f"PMC{start + i}_F1.jpg")
    rows = []
    for i in range(count):
        texts = [f"{tag} finding {i} option {letter}" for letter in "ABCD"]
        label = "ABCD"[i % 4]
        rows.append(
            {
                "Figure_path": figures(i),
                "Caption": f"Figure {i}: a caption.",
                "Question": f"What does figure {i} ({tag}) show?",
                "Answer": texts["ABCD".index(label)],
                **{f"Choice {letter}": f"{letter}:{text}" for letter, text in zip("ABCD", texts)},
                "Answer_label": label,
                "texts": texts,
            }
        )
    return rows


def write_csv(path, rows, columns=COLUMNS):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def figure_data(name):
    return image_bytes(sum(name.encode()), "JPEG")


def write_zip(path, names, corrupt=(), folder="figures"):
    """images.zip with the figures under ``folder/`` (DATASETS.md: users extract it to figures/)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name in dict.fromkeys(names):
            archive.writestr(f"{folder}/{name}", CORRUPT if name in corrupt else figure_data(name))
    return path


def first_per_figure(rows, n, seed, malformed=(), sample_prefix="pmc_vqa-test_clean"):
    """The draw computed here: random.Random(seed).shuffle of the positions of the usable rows (all
    but ``malformed``) in file order, the first row of each figure."""
    usable = [i for i in range(len(rows)) if i not in malformed]
    order = list(range(len(usable)))
    random.Random(seed).shuffle(order)
    chosen, seen = [], set()
    for i in (usable[k] for k in order):
        if rows[i]["Figure_path"] not in seen:
            seen.add(rows[i]["Figure_path"])
            chosen.append((f"{sample_prefix}-{i}", rows[i]))
    return chosen[:n]


def eval_root(tmp_path, rows):
    root = tmp_path / "pmc"
    write_csv(root / "test_clean.csv", rows)
    write_csv(root / "test.csv", entries(6, tag="big"))  # the 50k test file: never read by default
    write_csv(root / "train.csv", entries(6, tag="train", start=500), TRAIN_COLUMNS)
    write_zip(root / "images.zip", [row["Figure_path"] for row in rows])
    return root


def test_eval_draws_test_clean_with_the_options_and_letter(tmp_path):
    # rows 2k and 2k+1 share a figure for the first eight rows: one question per figure
    rows = entries(14, figures=lambda i: f"PMC{i // 2 if i < 8 else i}_F1.jpg")
    root = eval_root(tmp_path, rows)
    out = tmp_path / "med.parquet"
    argv = ["pmc_vqa", "--split", "eval", "--n", 6, "--seed", 3, "--out", out, "--root", root]
    samples, metadata = prepare(*argv)
    expected = first_per_figure(rows, 6, 3)
    assert [s.sample_id for s in samples] == [sample_id for sample_id, _ in expected]
    for sample, (_, row) in zip(samples, expected):
        assert sample.domain == "med" and sample.question == row["Question"]
        assert sample.answers == [row["Answer_label"]]
        assert sample.image == figure_data(row["Figure_path"])
        assert sample.meta["options"] == row["texts"]  # the "A:" prefixes gone, in the order A-D
        assert sample.meta["answer_label"] == row["Answer_label"] and sample.meta["answer"] == row["Answer"]
        assert sample.meta["figure_path"] == row["Figure_path"] and sample.meta["file"] == "test_clean.csv"
    assert metadata["official_split"] == "test_clean.csv" and metadata["rows_listed"] == 14
    assert "first question of each image" in metadata["draw"]
    files = {Path(f["name"]).name: f for f in metadata["files"]}
    assert set(files) == {"test_clean.csv", "images.zip"}
    csv_bytes = (root / "test_clean.csv").read_bytes()
    assert files["test_clean.csv"]["digest"] == f"sha256:{hashlib.sha256(csv_bytes).hexdigest()}"
    assert files["images.zip"]["size"] == (root / "images.zip").stat().st_size
    assert "CC BY-SA" in metadata["licence"] and metadata["skipped"] == []
    again, _ = prepare(*argv)
    other, _ = prepare("pmc_vqa", "--split", "eval", "--n", 6, "--seed", 4, "--out", out, "--root", root)
    assert [s.sample_id for s in again] == [s.sample_id for s in samples]
    assert [s.sample_id for s in other] != [s.sample_id for s in samples]


def test_the_paper_prompt_lists_the_options_and_the_letter_scores(tmp_path):
    rows = entries(4)
    root = eval_root(tmp_path, rows)
    samples, _ = prepare(
        "pmc_vqa", "--split", "eval", "--n", 4, "--seed", 0, "--out", tmp_path / "m.parquet", "--root", root
    )
    template = yaml.safe_load((REPO_ROOT / "config/paper.yaml").read_text())["evaluation"]["prompts"]["med"]
    for sample in samples:
        row = rows[int(sample.sample_id.rsplit("-", 1)[1])]
        prompt = build_prompt(None, "llava_next", template, sample)
        listed = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", row["texts"]))
        assert f"Question: {row['Question']}\nOptions:\n{listed}\nAnswer with the option's letter" in prompt
        assert "A:" not in prompt  # the CSV's own prefix is not shown twice
        letters = option_letters(sample.meta["options"])
        assert letters == "ABCD"
        assert option_accuracy(f"The answer is {row['Answer_label']}.", sample.answers, letters=letters) == 1.0
        wrong = "ABCD"[("ABCD".index(row["Answer_label"]) + 1) % 4]
        assert option_accuracy(wrong, sample.answers, letters=letters) == 0.0


def test_malformed_rows_are_skips_naming_the_row(tmp_path):
    rows = entries(10)
    rows[1]["Question"] = "  "
    rows[4]["Answer_label"] = "E"
    rows[6]["Choice C"] = ""
    rows[8]["Answer_label"] = ""
    root = eval_root(tmp_path, rows)
    out = tmp_path / "m.parquet"
    base = ["pmc_vqa", "--split", "eval", "--n", 10, "--seed", 1, "--out", out, "--root", root]
    samples, metadata = prepare(*base, "--max-bad-share", "0.5")
    skipped = {entry["sample_id"]: entry["reason"] for entry in metadata["skipped"]}
    assert set(skipped) == {f"pmc_vqa-test_clean-{i}" for i in (1, 4, 6, 8)}
    assert "test_clean.csv row 1 (line 3): no question" in skipped["pmc_vqa-test_clean-1"]
    assert "row 4" in skipped["pmc_vqa-test_clean-4"] and "'E' is not one of A-D" in skipped["pmc_vqa-test_clean-4"]
    assert "row 6" in skipped["pmc_vqa-test_clean-6"] and "choice(s) C" in skipped["pmc_vqa-test_clean-6"]
    assert "row 8" in skipped["pmc_vqa-test_clean-8"]
    assert metadata["rows_listed"] == 10
    expected = first_per_figure(rows, 10, 1, malformed={1, 4, 6, 8})
    assert len(samples) == 6 and [s.sample_id for s in samples] == [sample_id for sample_id, _ in expected]
    assert main(["prepare", *map(str, base), "--no-progress"]) == 1  # max_bad_share 0 by default


def test_missing_and_corrupt_figures_are_counted_skips(tmp_path):
    rows = entries(9)
    root = eval_root(tmp_path, rows)
    names = [row["Figure_path"] for row in rows]
    write_zip(root / "images.zip", [n for n in names if n != names[2]], corrupt={names[5]})
    out = tmp_path / "m.parquet"
    base = ["pmc_vqa", "--split", "eval", "--n", 9, "--seed", 2, "--out", out, "--root", root]
    samples, metadata = prepare(*base, "--max-bad-share", "0.5")
    skipped = {entry["sample_id"]: entry["reason"] for entry in metadata["skipped"]}
    assert set(skipped) == {"pmc_vqa-test_clean-2", "pmc_vqa-test_clean-5"}
    assert "not in the figures zip" in skipped["pmc_vqa-test_clean-2"]
    assert skipped["pmc_vqa-test_clean-5"].startswith("image unreadable")
    assert [s.sample_id for s in samples] == [
        sample_id for sample_id, _ in first_per_figure(rows, 9, 2) if sample_id not in skipped
    ]
    assert main(["prepare", *map(str, base), "--no-progress"]) == 1


def test_extracted_figures_give_the_same_samples_as_the_zip(tmp_path):
    rows = entries(8)
    root = eval_root(tmp_path, rows)
    argv = ["pmc_vqa", "--split", "eval", "--n", 5, "--seed", 7]
    from_zip, _ = prepare(*argv, "--out", tmp_path / "a.parquet", "--root", root)
    (root / "figures").mkdir()
    for row in rows:
        (root / "figures" / row["Figure_path"]).write_bytes(figure_data(row["Figure_path"]))
    (root / "images.zip").unlink()
    extracted, metadata = prepare(*argv, "--out", tmp_path / "b.parquet", "--root", root)
    assert [(s.sample_id, s.image, s.answers, s.meta) for s in extracted] == [
        (s.sample_id, s.image, s.answers, s.meta) for s in from_zip
    ]
    assert [Path(f["name"]).name for f in metadata["files"]] == ["test_clean.csv"]


def test_stats_reads_train_csv_and_both_versions_with_their_zips(tmp_path):
    v1, v2 = entries(6, tag="v1", start=100), entries(5, tag="v2", start=200)
    v2[0]["Anwser"] = v2[0].pop("Answer")  # the older spelling, in this file only
    root = tmp_path / "pmc"
    write_csv(root / "train.csv", v1, TRAIN_COLUMNS)
    old = ["Figure_path", "Question", "Anwser", *COLUMNS[3:]]
    write_csv(root / "train_2.csv", [{**row, "Anwser": row.get("Anwser", row.get("Answer"))} for row in v2], old)
    write_csv(root / "test_clean.csv", entries(3, tag="test"))
    write_zip(root / "images.zip", [row["Figure_path"] for row in v1])
    write_zip(root / "images_2.zip", [row["Figure_path"] for row in v2], folder="images_2")
    out = tmp_path / "s.parquet"
    samples, metadata = prepare("pmc_vqa", "--split", "stats", "--n", 20, "--seed", 5, "--out", out, "--root", root)
    assert {s.sample_id for s in samples} == {f"pmc_vqa-train-{i}" for i in range(6)}
    assert metadata["official_split"] == "train.csv" and metadata["rows_listed"] == 6
    samples, metadata = prepare(
        "pmc_vqa", "--split", "stats", "--n", 20, "--seed", 5, "--out", out, "--root", root, "--train", "both"
    )
    ids = [f"pmc_vqa-train-{i}" for i in range(6)] + [f"pmc_vqa-train_2-{i}" for i in range(5)]
    order = list(range(11))
    random.Random(5).shuffle(order)
    assert [s.sample_id for s in samples] == [ids[i] for i in order]
    by_id = {s.sample_id: s for s in samples}
    assert by_id["pmc_vqa-train_2-0"].meta["answer"] == v2[0]["Anwser"]
    assert by_id["pmc_vqa-train_2-3"].image == figure_data(v2[3]["Figure_path"])
    assert {Path(f["name"]).name for f in metadata["files"]} == {
        "train.csv",
        "train_2.csv",
        "images.zip",
        "images_2.zip",
    }


def test_missing_csv_figures_or_column_are_one_clear_error_line(tmp_path, capsys):
    root = tmp_path / "pmc"
    root.mkdir()
    argv = ["prepare", "pmc_vqa", "--split", "eval", "--n", "1", "--out", str(tmp_path / "o.parquet")]
    argv += ["--root", str(root), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"PMC-VQA CSV not found: {root / 'test_clean.csv'}" in err
    assert "https://huggingface.co/datasets/xmcmic/PMC-VQA" in err
    assert not (tmp_path / "o.parquet").exists()
    write_csv(root / "test_clean.csv", entries(2))
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "PMC-VQA figures not found" in err and "images.zip" in err
    write_zip(root / "images.zip", [row["Figure_path"] for row in entries(2)])
    write_csv(root / "test_clean.csv", entries(2), [c for c in COLUMNS if c != "Answer_label"])
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing column(s) ['Answer_label']" in err
