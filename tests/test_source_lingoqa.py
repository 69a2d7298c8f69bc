"""The lingoqa source on a fixture in the official layout: val.parquet (two rows per question) and
the frames images/val/<segment>/{0..4}.jpg extracted or in images.zip."""

from __future__ import annotations

import io
import logging
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageChops, ImageStat
from source_fixtures import CORRUPT, expected_draw, image_bytes, prepare

from mmneuron.cli import main
from mmneuron.data.sources.lingoqa import VAL_SHA256

FRAME = (20, 12)


def frame(segment: int, index: int) -> bytes:
    return image_bytes(segment * 10 + index, "JPEG", FRAME)


def build(root, segments=4, per_segment=3, zipped=False, nest=None, split="val", corrupt=None, absent=None):
    """Questions q{s}_{k} over segments s, each with two rows (two references); returns
    {question_id: (segment, question, [ref1, ref2])} in parquet order."""
    root.mkdir(parents=True)
    nest = nest or f"images/{split}"
    rows, questions, members = [], {}, {}
    for s in range(segments):
        paths = [f"images/{split}/seg{s}/{i}.jpg" for i in range(5)]
        for k in range(per_segment):
            qid = f"q{s}_{k}"
            refs = [f"answer {qid} a", f"answer {qid} b"]
            questions[qid] = (s, f"What should the car do {qid}?", refs)
            for ref in refs:
                rows.append(
                    {
                        "question_id": qid,
                        "segment_id": f"seg{s}",
                        "images": paths,
                        "question": questions[qid][1],
                        "answer": ref,
                    }
                )
        for i in range(5):
            members[f"{nest}/seg{s}/{i}.jpg"] = frame(s, i)
    if corrupt:
        members[f"{nest}/{corrupt}"] = CORRUPT
    if absent:
        del members[f"{nest}/{absent}"]
    # rows of one question need not be adjacent: put the second references last
    ordered = rows[0::2] + rows[1::2]
    pq.write_table(pa.Table.from_pylist(ordered), root / f"{split}.parquet")
    if zipped:
        with zipfile.ZipFile(root / "images.zip", "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    else:
        for name, data in members.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    return questions


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def test_joined_frames_from_a_zip_keep_both_references_and_warn_on_another_sha256(tmp_path, caplog):
    questions = build(tmp_path / "lingo", zipped=True, nest="val")  # the zip nests the frames its own way
    out = tmp_path / "ad.parquet"
    with caplog.at_level(logging.WARNING):
        samples, metadata = prepare(
            "lingoqa", "--split", "eval", "--n", 5, "--seed", 7, "--out", out, "--root", tmp_path / "lingo"
        )
    assert VAL_SHA256 in caplog.text and "Drive copy may differ" in caplog.text
    ids = expected_draw(list(questions), 5, 7)
    assert [s.sample_id for s in samples] == [f"lingoqa-{q}" for q in ids]
    for sample, qid in zip(samples, ids):
        segment, question, refs = questions[qid]
        assert sample.domain == "ad" and sample.question == question and sample.answers == refs
        assert sample.meta["segment_id"] == f"seg{segment}" and sample.meta["question_id"] == qid
        strip = decode(sample.image)
        assert strip.size == (5 * FRAME[0], FRAME[1])
        for i in range(5):  # each panel is frame i (JPEG re-encoding: close, not equal)
            panel = strip.crop((i * FRAME[0], 0, (i + 1) * FRAME[0], FRAME[1]))
            assert max(ImageStat.Stat(ImageChops.difference(panel, decode(frame(segment, i)))).mean) < 6
    assert metadata["official_split"] == "val" and metadata["rows_listed"] == len(questions)
    again, _ = prepare("lingoqa", "--split", "eval", "--n", 5, "--seed", 7, "--out", out, "--root", tmp_path / "lingo")
    other, _ = prepare("lingoqa", "--split", "eval", "--n", 5, "--seed", 8, "--out", out, "--root", tmp_path / "lingo")
    assert [s.sample_id for s in again] == [s.sample_id for s in samples] != [s.sample_id for s in other]


def test_separate_frames_are_one_sample_each(tmp_path):
    questions = build(tmp_path / "lingo", segments=2, per_segment=2, split="train")
    out = tmp_path / "ad.parquet"
    samples, metadata = prepare(
        "lingoqa",
        "--split",
        "stats",
        "--n",
        6,
        "--seed",
        1,
        "--out",
        out,
        "--root",
        tmp_path / "lingo",
        "--frames",
        "separate",
    )
    listed = [f"lingoqa-{q}/f{i}" for q in questions for i in range(5)]
    assert [s.sample_id for s in samples] == expected_draw(listed, 6, 1)
    for sample in samples:
        qid, index = sample.meta["question_id"], sample.meta["frame"]
        assert sample.image == frame(questions[qid][0], index) and sample.answers == questions[qid][2]
    assert metadata["official_split"] == "train" and metadata["rows_listed"] == 20


def test_malformed_question_missing_and_corrupt_frames_are_counted(tmp_path):
    root = tmp_path / "lingo"
    questions = build(root, segments=5, per_segment=2, corrupt="seg1/3.jpg", absent="seg2/0.jpg")
    table = pq.read_table(root / "val.parquet").to_pylist()
    for row in table:
        if row["question_id"] == "q3_1":
            row["images"] = row["images"][:4]  # only four frames
            break
    pq.write_table(pa.Table.from_pylist(table), root / "val.parquet")
    out = tmp_path / "ad.parquet"
    argv = ["lingoqa", "--split", "eval", "--n", 10, "--seed", 0, "--out", out, "--root", root]
    samples, metadata = prepare(*argv, "--max-bad-share", "0.5")
    skipped = {entry["sample_id"]: entry["reason"] for entry in metadata["skipped"]}
    bad = {f"lingoqa-q{s}_{k}" for s in (1, 2) for k in range(2)}
    assert set(skipped) == bad | {"lingoqa-q3_1"} and "disagree" in skipped["lingoqa-q3_1"]
    assert [s.sample_id for s in samples] == [
        i for i in expected_draw([f"lingoqa-{q}" for q in questions if q != "q3_1"], 9, 0) if i not in bad
    ]
    assert main(["prepare", *map(str, argv), "--no-progress"]) == 1


def test_missing_parquet_and_frames_are_clear_errors(tmp_path, capsys):
    out = str(tmp_path / "o.parquet")
    root = tmp_path / "lingo"
    root.mkdir()
    argv = ["prepare", "lingoqa", "--split", "eval", "--n", "1", "--out", out, "--root", str(root)]
    assert main(argv) == 1
    assert "LingoQA parquet not found" in capsys.readouterr().err
    pq.write_table(
        pa.Table.from_pylist(
            [{"question_id": "q", "segment_id": "s", "images": ["a"] * 5, "question": "?", "answer": "x"}]
        ),
        root / "val.parquet",
    )
    assert main(argv) == 1
    assert "images.zip" in capsys.readouterr().err


def test_licence_carries_the_required_attribution():
    from mmneuron.data.sources.lingoqa import LICENCE

    sentence = (
        "This work was made using the Wayve LingoQA dataset and benchmark, provided by Wayve Technologies Ltd "
        "under licence terms available at https://github.com/wayveai/LingoQA."
    )
    assert sentence in " ".join(LICENCE.split())


def test_the_published_val_sha256_is_accepted_without_warning(tmp_path, caplog, monkeypatch):
    import hashlib

    from mmneuron.data.sources import lingoqa

    build(tmp_path / "lingo", segments=1, per_segment=1)
    monkeypatch.setattr(
        lingoqa, "VAL_SHA256", hashlib.sha256((tmp_path / "lingo" / "val.parquet").read_bytes()).hexdigest()
    )
    with caplog.at_level(logging.WARNING):
        prepare("lingoqa", "--split", "eval", "--n", 1, "--out", tmp_path / "o.parquet", "--root", tmp_path / "lingo")
    assert "differs" not in caplog.text
