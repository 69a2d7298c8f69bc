"""The rsvqa source on a fixture in the Zenodo record's layout: index-aligned split JSONs and Images.tar."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

from source_fixtures import CORRUPT, expected_draw, image_bytes, prepare

from mmneuron.cli import main

TYPES = ("presence", "comp", "count", "area")


def build(root, split="train", images=6, per_image=3, inactive_image=None, tar=True, corrupt=(), absent=()):
    """Questions 3 per image (one inactive), the answer lists index-aligned, images in Images.tar
    (or Data/) as Data/{id}.png and .tif; returns the active questions as (id, img_id, question, answer, type)."""
    root.mkdir(parents=True, exist_ok=True)
    questions, answers, image_entries, active = [], [], [], []
    for img in range(images):
        ids = []
        for k in range(per_image):
            qid = len(questions)
            on = k != per_image - 1  # the last question of each image belongs to another split
            kind = TYPES[qid % 4]
            questions.append(
                {
                    "id": qid,
                    "img_id": img,
                    "type": kind,
                    "question": f"Is there a road {qid}?",
                    "answers_ids": [qid],
                    "active": on,
                    "people_id": 0,
                }
            )
            answers.append(
                {"id": qid, "question_id": qid, "answer": "yes" if qid % 2 else "no", "active": on, "people_id": 0}
            )
            ids.append(qid)
            if on and img != inactive_image:
                active.append((qid, img, questions[-1]["question"], answers[-1]["answer"], kind))
        image_entries.append(
            {"id": img, "questions_ids": ids, "active": img != inactive_image, "original_name": f"{img}.tif"}
        )
    for kind, entries in (("questions", questions), ("answers", answers), ("images", image_entries)):
        (root / f"USGS_split_{split}_{kind}.json").write_text(json.dumps({kind: entries}))
    members = {}
    for img in range(images):
        if img in absent:
            continue
        members[f"Data/{img}.png"] = CORRUPT if img in corrupt else image_bytes(img, "PNG")
        members[f"Data/{img}.tif"] = image_bytes(img, "TIFF")
    if tar:
        with tarfile.open(root / "Images.tar", "w") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    else:
        (root / "Data").mkdir()
        for name, data in members.items():
            (root / name).write_bytes(data)
    return active


def expected(active, n, seed, bad_images=()):
    """Brute force: the seeded order of all active questions, the first question of each image,
    skipping bad images; returns (ids written, ids skipped)."""
    order = expected_draw([q[0] for q in active], len(active), seed)
    by_id = {q[0]: q for q in active}
    written, skipped, seen = [], [], set()
    for qid in order:
        img = by_id[qid][1]
        if img in seen or len(written) == n:
            continue
        seen.add(img)
        (skipped if img in bad_images else written).append(by_id[qid])
    return written, skipped


def test_tar_draw_matches_brute_force_with_types_and_verified_md5s(tmp_path):
    root = tmp_path / "rsvqa"
    active = build(root, images=8)
    record = {
        "files": [{"key": f.name, "checksum": "md5:" + hashlib.md5(f.read_bytes()).hexdigest()} for f in root.iterdir()]
    }
    (tmp_path / "record.json").write_text(json.dumps(record))
    out = tmp_path / "rs.parquet"
    argv = ["rsvqa", "--split", "stats", "--n", 5, "--seed", 2, "--out", out, "--root", root]
    samples, metadata = prepare(*argv, "--checksums", tmp_path / "record.json")
    written, _ = expected(active, 5, 2)
    assert [s.sample_id for s in samples] == [f"rsvqa-{q[0]}" for q in written]
    for sample, (qid, img, question, answer, kind) in zip(samples, written):
        assert sample.domain == "rs" and sample.question == question and sample.answers == [answer]
        assert sample.image == image_bytes(img, "PNG")
        assert (
            sample.meta["question_type"] == kind and sample.meta["img_id"] == img and sample.meta["question_id"] == qid
        )
    digests = {f["name"].rsplit("/", 1)[-1]: f["digest"] for f in metadata["files"]}
    assert digests["Images.tar"] == "md5:" + hashlib.md5((root / "Images.tar").read_bytes()).hexdigest()
    assert metadata["official_split"] == "train" and metadata["rows_listed"] == len(active)
    tif, _ = prepare(*argv, "--image-format", "tif")
    assert [s.image for s in tif] == [image_bytes(q[1], "TIFF") for q in written]
    other, _ = prepare(*argv[:6], 3, *argv[7:])
    assert [s.sample_id for s in other] != [s.sample_id for s in samples]


def test_missing_corrupt_and_inactive_images_and_a_malformed_question(tmp_path):
    root = tmp_path / "rsvqa"
    active = build(root, split="val", images=10, inactive_image=4, corrupt={1}, absent={6})
    path = root / "USGS_split_val_questions.json"
    questions = json.loads(path.read_text())
    questions["questions"][0]["answers_ids"] = [999]  # points past the answers list
    path.write_text(json.dumps(questions))
    active = [q for q in active if q[0] != 0]
    out = tmp_path / "rs.parquet"
    argv = ["rsvqa", "--split", "eval", "--n", 6, "--seed", 5, "--out", out, "--root", root, "--max-bad-share", "0.5"]
    samples, metadata = prepare(*argv)
    written, bad = expected(active, 6, 5, bad_images={1, 6})
    assert [s.sample_id for s in samples] == [f"rsvqa-{q[0]}" for q in written]
    skipped = {entry["sample_id"]: entry["reason"] for entry in metadata["skipped"]}
    inactive = {f"rsvqa-{q}" for q in (12, 13)}  # image 4 is inactive in this split
    assert set(skipped) == {"rsvqa-0"} | inactive | {f"rsvqa-{q[0]}" for q in bad}
    assert "malformed" in skipped["rsvqa-0"] and "not active" in skipped["rsvqa-12"]
    assert main(["prepare", *map(str, argv[:-2]), "--no-progress"]) == 1  # past max_bad_share 0


def test_the_tar_pass_stops_once_it_has_the_drawn_images(tmp_path):
    root = tmp_path / "rsvqa"
    active = build(root, images=8)
    # a truncated member after the images: a pass that read on to the end would fail on it
    with open(root / "Images.tar", "r+b") as handle:
        handle.seek(-1024, 2)  # over the end-of-archive blocks
        info = tarfile.TarInfo("Data/zz_truncated.bin")
        info.size = 1 << 20
        handle.write(info.tobuf() + b"x" * 100)
        handle.truncate()
    samples, _ = prepare(
        "rsvqa", "--split", "stats", "--n", 3, "--seed", 4, "--out", tmp_path / "o.parquet", "--root", root
    )
    assert [s.sample_id for s in samples] == [f"rsvqa-{q[0]}" for q in expected(active, 3, 4)[0]]


def test_extracted_folder_gives_the_same_samples_as_the_tar(tmp_path):
    build(tmp_path / "a", images=5)
    build(tmp_path / "b", images=5, tar=False)
    got = [
        prepare("rsvqa", "--split", "stats", "--n", 4, "--out", tmp_path / f"{r}.parquet", "--root", tmp_path / r)[0]
        for r in "ab"
    ]
    assert [(s.sample_id, s.image) for s in got[0]] == [(s.sample_id, s.image) for s in got[1]]


def test_checksum_mismatch_and_missing_files_are_clear_errors(tmp_path, capsys):
    root = tmp_path / "rsvqa"
    build(root, images=3)
    (tmp_path / "sums.md5").write_text(f"{'0' * 32}  USGS_split_train_answers.json\n")
    out = str(tmp_path / "o.parquet")
    argv = ["prepare", "rsvqa", "--split", "stats", "--n", "2", "--out", out, "--root", str(root)]
    assert main([*argv, "--checksums", str(tmp_path / "sums.md5")]) == 1
    err = capsys.readouterr().err
    assert "USGS_split_train_answers.json: md5 is" in err and "0" * 32 in err
    (root / "Images.tar").unlink()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Images.tar" in err and "zenodo.org/records/6344367" in err
    assert main([*argv[:-1], str(tmp_path / "none")]) == 1
    assert "RSVQA-HR folder (--root) not found" in capsys.readouterr().err
