"""The docvqa source on fixtures in its two real layouts: the pixparse parquet mirror and the official JSON."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from source_fixtures import CORRUPT, expected_draw, image_bytes, prepare

from mmneuron.cli import main

# The pixparse/docvqa-single-page-questions features (image is the datasets Image struct).
SCHEMA = pa.schema(
    [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("question_id", pa.int64()),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
        (
            "other_metadata",
            pa.struct(
                [
                    ("doc_id", pa.int64()),
                    ("image", pa.string()),
                    ("ucsf_document_id", pa.string()),
                    ("ucsf_document_page_no", pa.string()),
                    ("question_types", pa.list_(pa.string())),
                ]
            ),
        ),
    ]
)


def rows(count, pages=None):
    """Questions 100.. with two per page (pages p0, p0, p1, p1, ...)."""
    pages = pages or (lambda i: i // 2)
    return [
        {
            "question_id": 100 + i,
            "question": f"What is field {i}?",
            "answers": [f"value {i}", f"val {i}"],
            "page": f"page{pages(i)}.png",
            "bytes": image_bytes(pages(i), "PNG"),
        }
        for i in range(count)
    ]


def write_mirror(folder, split, entries, per_file=6):
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    shards = [entries[i : i + per_file] for i in range(0, len(entries), per_file)]
    for number, shard in enumerate(shards):
        table = pa.Table.from_pylist(
            [
                {
                    "image": {"bytes": e["bytes"], "path": None},
                    "question_id": e["question_id"],
                    "question": e["question"],
                    "answers": e["answers"],
                    "other_metadata": {
                        "doc_id": 7,
                        "image": e["page"],
                        "ucsf_document_id": f"u{e['page']}",
                        "ucsf_document_page_no": "1",
                        "question_types": ["form"],
                    },
                }
                for e in shard
            ],
            schema=SCHEMA,
        )
        pq.write_table(table, data / f"{split}-{number:05d}-of-{len(shards):05d}.parquet", row_group_size=4)
    return folder


def first_per_page(entries, n, seed):
    """The draw computed here: the seeded order of all listed questions, first question of each page."""
    order = expected_draw([e["question_id"] for e in entries], len(entries), seed)
    by_id = {e["question_id"]: e for e in entries}
    chosen, pages = [], set()
    for qid in order:
        if by_id[qid]["page"] not in pages:
            pages.add(by_id[qid]["page"])
            chosen.append(by_id[qid])
    return chosen[:n]


def test_mirror_draws_one_question_per_page_with_its_identifiers(tmp_path):
    entries = rows(20)
    write_mirror(tmp_path / "mirror", "train", entries)
    write_mirror(tmp_path / "mirror", "validation", rows(4))  # another split, never listed for stats
    out = tmp_path / "doc.parquet"
    samples, metadata = prepare(
        "docvqa", "--split", "stats", "--n", 5, "--seed", 3, "--out", out, "--mirror", tmp_path / "mirror"
    )
    expected = first_per_page(entries, 5, 3)
    assert [s.sample_id for s in samples] == [f"docvqa-{e['question_id']}" for e in expected]
    for sample, entry in zip(samples, expected):
        assert sample.domain == "doc" and sample.question == entry["question"] and sample.answers == entry["answers"]
        assert sample.image == entry["bytes"]
        assert sample.meta["page"] == entry["page"] and sample.meta["ucsf_document_id"] == f"u{entry['page']}"
        assert sample.meta["question_id"] == entry["question_id"] and sample.meta["question_types"] == ["form"]
    assert metadata["official_split"] == "train" and metadata["rows_listed"] == 20
    assert "first question of each image" in metadata["draw"]
    assert len(metadata["files"]) == 4 and all(
        f["name"].rsplit("/", 1)[-1].startswith("train-") for f in metadata["files"]
    )
    again, _ = prepare(
        "docvqa", "--split", "stats", "--n", 5, "--seed", 3, "--out", out, "--mirror", tmp_path / "mirror"
    )
    other, _ = prepare(
        "docvqa", "--split", "stats", "--n", 5, "--seed", 4, "--out", out, "--mirror", tmp_path / "mirror"
    )
    assert [s.sample_id for s in again] == [s.sample_id for s in samples]
    assert [s.sample_id for s in other] != [s.sample_id for s in samples]


def test_mirror_through_fsspec_reads_the_same_rows(tmp_path):
    """An fsspec URL (hf:// on the hub; file:// here, offline) goes through the range-request path."""
    write_mirror(tmp_path / "mirror", "validation", rows(8))
    argv = ["docvqa", "--split", "eval", "--n", 3, "--seed", 2]
    local, _ = prepare(*argv, "--out", tmp_path / "a.parquet", "--mirror", tmp_path / "mirror")
    remote, metadata = prepare(*argv, "--out", tmp_path / "b.parquet", "--mirror", f"file://{tmp_path / 'mirror'}")
    assert [(s.sample_id, s.image, s.answers) for s in remote] == [(s.sample_id, s.image, s.answers) for s in local]
    assert all(f["name"].startswith("file://") for f in metadata["files"])


def test_mirror_malformed_row_and_corrupt_image_are_counted_skips(tmp_path):
    entries = rows(10, pages=lambda i: i)
    entries[2]["answers"] = []
    entries[5]["bytes"] = CORRUPT
    write_mirror(tmp_path / "m", "validation", entries)
    out = tmp_path / "doc.parquet"
    base = ["docvqa", "--split", "eval", "--n", 9, "--seed", 0, "--out", out, "--mirror", tmp_path / "m"]
    samples, metadata = prepare(*base, "--max-bad-share", "0.5")
    skipped = {entry["sample_id"]: entry["reason"] for entry in metadata["skipped"]}
    assert set(skipped) == {"docvqa-102", "docvqa-105"} and "no answers" in skipped["docvqa-102"]
    assert len(samples) == 8 and {s.sample_id for s in samples} == {f"docvqa-{100 + i}" for i in range(10)} - set(
        skipped
    )
    assert main(["prepare", *map(str, base), "--no-progress"]) == 1  # max_bad_share 0 by default


def write_official(folder, entries, split="val"):
    docs = folder / "documents"
    docs.mkdir(parents=True)
    data = []
    for e in entries:
        (docs / e["page"]).write_bytes(e["bytes"])
        data.append(
            {
                "questionId": e["question_id"],
                "question": e["question"],
                "question_types": ["form"],
                "image": f"documents/{e['page']}",
                "docId": 7,
                "ucsf_document_id": f"u{e['page']}",
                "ucsf_document_page_no": "1",
                "answers": e["answers"],
                "data_split": split,
            }
        )
    path = folder / f"{split}_v1.0_withQT.json"
    path.write_text(
        json.dumps({"dataset_name": "docvqa", "dataset_split": split, "dataset_version": "1.0", "data": data})
    )
    return path


def test_official_json_with_a_missing_page(tmp_path):
    entries = rows(12)
    questions = write_official(tmp_path / "docvqa", entries)
    (tmp_path / "docvqa" / "documents" / "page1.png").unlink()
    out = tmp_path / "doc.parquet"
    samples, metadata = prepare(
        "docvqa",
        "--split",
        "eval",
        "--n",
        6,
        "--seed",
        1,
        "--out",
        out,
        "--questions",
        questions,
        "--max-bad-share",
        "0.5",
    )
    expected = [e for e in first_per_page(entries, 6, 1) if e["page"] != "page1.png"]
    assert [s.sample_id for s in samples] == [f"docvqa-{e['question_id']}" for e in expected]
    assert all(s.image == e["bytes"] and s.meta["page"] == f"documents/{e['page']}" for s, e in zip(samples, expected))
    assert [entry["sample_id"] for entry in metadata["skipped"]] == [
        f"docvqa-{e['question_id']}" for e in first_per_page(entries, 6, 1) if e["page"] == "page1.png"
    ]


def test_missing_mirror_and_two_layouts_are_clear_errors(tmp_path, capsys):
    out = str(tmp_path / "o.parquet")
    assert (
        main(["prepare", "docvqa", "--split", "eval", "--n", "1", "--out", out, "--mirror", str(tmp_path / "none")])
        == 1
    )
    assert "docvqa parquet mirror (--mirror) not found" in capsys.readouterr().err
    json_file = str(tmp_path / "q.json")
    assert (
        main(
            [
                "prepare",
                "docvqa",
                "--split",
                "eval",
                "--n",
                "1",
                "--out",
                out,
                "--mirror",
                "x",
                "--questions",
                json_file,
            ]
        )
        == 1
    )
    assert "either --mirror" in capsys.readouterr().err
