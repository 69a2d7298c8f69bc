"""The vqav2 source on fixtures in its two real layouts: the official question/annotation JSON
(in their downloaded zips) with COCO's image zip, and the lmms-lab/VQAv2 parquet mirror."""

from __future__ import annotations

import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
from source_fixtures import CORRUPT, expected_draw, image_bytes, prepare

from mmneuron.cli import main


def entries(count, images=None):
    """Questions 500.. on images 9000.. (two questions per image unless ``images`` says otherwise),
    each with ten answers of distinct confidence."""
    images = images or (lambda i: 9000 + i // 2)
    return [
        {
            "question_id": 500 + i,
            "image_id": images(i),
            "question": f"What colour is thing {i}?",
            "answers": [
                {"answer": f"colour {i}" if k < 7 else f"shade {k}", "answer_confidence": "yes", "answer_id": k + 1}
                for k in range(10)
            ],
            "question_type": "what color",
            "answer_type": "other",
            "multiple_choice_answer": f"colour {i}",
        }
        for i in range(count)
    ]


def coco_name(entry, split="val"):
    return f"COCO_{split}2014_{entry['image_id']:012d}.jpg"


def write_official(root, items, split="val", skip_images=()):
    """ROOT/v2_{Questions,Annotations}_{Split}_mscoco.zip and ROOT/{split}2014.zip, as downloaded."""
    root.mkdir(parents=True, exist_ok=True)
    title = split.capitalize()
    questions = [{k: e[k] for k in ("image_id", "question", "question_id")} for e in items]
    annotations = [{k: v for k, v in e.items() if k not in ("question", "bytes")} for e in items]
    with zipfile.ZipFile(root / f"v2_Questions_{title}_mscoco.zip", "w") as z:
        z.writestr(
            f"v2_OpenEnded_mscoco_{split}2014_questions.json",
            json.dumps({"task_type": "Open-Ended", "data_type": "mscoco", "questions": questions}),
        )
    with zipfile.ZipFile(root / f"v2_Annotations_{title}_mscoco.zip", "w") as z:
        z.writestr(f"v2_mscoco_{split}2014_annotations.json", json.dumps({"annotations": annotations}))
    with zipfile.ZipFile(root / f"{split}2014.zip", "w") as z:
        for e in {e["image_id"]: e for e in reversed(items)}.values():  # each image once
            if e["image_id"] not in skip_images:
                z.writestr(f"{split}2014/{coco_name(e, split)}", e.get("bytes") or image_bytes(e["image_id"]))
    return root


def first_per_image(items, n, seed):
    order = expected_draw([e["question_id"] for e in items], len(items), seed)
    by_id = {e["question_id"]: e for e in items}
    chosen, seen = [], set()
    for qid in order:
        if by_id[qid]["image_id"] not in seen:
            seen.add(by_id[qid]["image_id"])
            chosen.append(by_id[qid])
    return chosen[:n]


def test_official_zips_give_one_question_per_image_with_all_ten_answers(tmp_path):
    items = entries(16)
    root = write_official(tmp_path / "vqa", items)
    samples, metadata = prepare(
        "vqav2", "--split", "eval", "--n", 5, "--seed", 2, "--out", tmp_path / "c.parquet", "--root", root
    )
    expected = first_per_image(items, 5, 2)
    assert [s.sample_id for s in samples] == [f"vqav2-{e['question_id']}" for e in expected]
    for sample, entry in zip(samples, expected):
        assert sample.domain == "com" and sample.question == entry["question"]
        assert sample.answers == [a["answer"] for a in entry["answers"]] and len(sample.answers) == 10
        assert sample.image == image_bytes(entry["image_id"])
        assert sample.meta["image"] == coco_name(entry) and sample.meta["question_type"] == "what color"
        assert sample.meta["multiple_choice_answer"] == entry["multiple_choice_answer"]
    assert metadata["official_split"] == "val" and metadata["rows_listed"] == 16
    assert {f["name"].rsplit("/", 1)[-1] for f in metadata["files"]} == {
        "v2_Questions_Val_mscoco.zip",
        "v2_Annotations_Val_mscoco.zip",
        "val2014.zip",
    }
    assert "CC BY 4.0" in metadata["licence"]


def test_extracted_json_and_image_folder_read_the_same_samples(tmp_path):
    items = entries(10)
    root = write_official(tmp_path / "vqa", items, split="train")
    for archive in ("v2_Questions_Train_mscoco.zip", "v2_Annotations_Train_mscoco.zip", "train2014.zip"):
        with zipfile.ZipFile(root / archive) as z:
            z.extractall(root)
        (root / archive).unlink()
    samples, _ = prepare(
        "vqav2", "--split", "stats", "--n", 4, "--seed", 1, "--out", tmp_path / "c.parquet", "--root", root
    )
    expected = first_per_image(items, 4, 1)
    assert [(s.sample_id, s.image) for s in samples] == [
        (f"vqav2-{e['question_id']}", image_bytes(e["image_id"])) for e in expected
    ]


def test_malformed_rows_missing_and_corrupt_images_are_counted_skips(tmp_path):
    items = entries(10, images=lambda i: 9000 + i)
    items[1]["answers"] = items[1]["answers"][:3]  # not the ten answers the metric needs
    items[4]["bytes"] = CORRUPT
    root = write_official(tmp_path / "vqa", items, skip_images={9007})
    base = ["vqav2", "--split", "eval", "--n", 9, "--seed", 0, "--out", tmp_path / "c.parquet", "--root", root]
    samples, metadata = prepare(*base, "--max-bad-share", "0.5")
    skipped = {entry["sample_id"]: entry["reason"] for entry in metadata["skipped"]}
    assert set(skipped) == {"vqav2-501", "vqav2-504", "vqav2-507"}
    assert "expected 10 answers" in skipped["vqav2-501"] and "not in val2014.zip" in skipped["vqav2-507"]
    assert "image unreadable" in skipped["vqav2-504"]
    assert {s.sample_id for s in samples} == {f"vqav2-{500 + i}" for i in range(10)} - set(skipped)
    assert main(["prepare", *map(str, base), "--no-progress"]) == 1  # max_bad_share 0 by default


def test_checksum_mismatch_and_missing_files_are_one_clear_line(tmp_path, capsys):
    root = write_official(tmp_path / "vqa", entries(4))
    out = str(tmp_path / "c.parquet")
    argv = ["prepare", "vqav2", "--split", "eval", "--n", "1", "--out", out, "--root", str(root), "--no-progress"]
    assert main([*argv, "--verify-images"]) == 1
    err = capsys.readouterr().err
    assert "val2014.zip: md5 is" in err and "a3d79f5ed8d289b7a7554ce06a5782b3" in err
    (root / "v2_Annotations_Val_mscoco.zip").unlink()
    assert main(argv) == 1
    assert "v2_mscoco_val2014_annotations.json" in capsys.readouterr().err
    assert main([*argv[:-3], "--no-progress"]) == 1  # neither --root nor --mirror
    assert "either --root" in capsys.readouterr().err


# The lmms-lab/VQAv2 features (image is the datasets Image struct, answers a list of structs).
SCHEMA = pa.schema(
    [
        ("question_type", pa.string()),
        ("multiple_choice_answer", pa.string()),
        (
            "answers",
            pa.list_(
                pa.struct([("answer", pa.string()), ("answer_confidence", pa.string()), ("answer_id", pa.int64())])
            ),
        ),
        ("image_id", pa.int64()),
        ("answer_type", pa.string()),
        ("question_id", pa.int64()),
        ("question", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ]
)


def write_mirror(folder, items, per_file=5):
    data = folder / "data"
    data.mkdir(parents=True)
    shards = [items[i : i + per_file] for i in range(0, len(items), per_file)]
    for number, shard in enumerate(shards):
        rows = [{**e, "image": {"bytes": e.get("bytes") or image_bytes(e["image_id"]), "path": None}} for e in shard]
        table = pa.Table.from_pylist([{k: r.get(k) for k in SCHEMA.names} for r in rows], schema=SCHEMA)
        name = f"validation-{number:05d}-of-{len(shards):05d}.parquet"
        pq.write_table(table, data / name, row_group_size=3)
    return folder


def test_mirror_matches_the_official_files_and_streams_through_fsspec(tmp_path):
    items = entries(12)
    root = write_official(tmp_path / "vqa", items)
    mirror = write_mirror(tmp_path / "mirror", items)
    argv = ["vqav2", "--split", "eval", "--n", 4, "--seed", 5]
    official, _ = prepare(*argv, "--out", tmp_path / "a.parquet", "--root", root)
    local, metadata = prepare(*argv, "--out", tmp_path / "b.parquet", "--mirror", mirror)
    remote, _ = prepare(*argv, "--out", tmp_path / "c.parquet", "--mirror", f"file://{mirror}")
    key = [(s.sample_id, s.question, s.answers, s.image) for s in official]
    assert [(s.sample_id, s.question, s.answers, s.image) for s in local] == key
    assert [(s.sample_id, s.question, s.answers, s.image) for s in remote] == key
    assert len(metadata["files"]) == 3 and all("validation-" in f["name"] for f in metadata["files"])


def test_mirror_has_no_train_split(tmp_path, capsys):
    mirror = write_mirror(tmp_path / "mirror", entries(3))
    out = str(tmp_path / "c.parquet")
    assert main(["prepare", "vqav2", "--split", "stats", "--n", "1", "--out", out, "--mirror", str(mirror)]) == 1
    assert "no train-*.parquet" in capsys.readouterr().err
