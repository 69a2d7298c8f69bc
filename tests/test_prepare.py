"""The machinery every dataset source shares (mmneuron.data.sources.base) and `mmneuron prepare`."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from types import SimpleNamespace

import pytest
from source_fixtures import CORRUPT, expected_draw, image_bytes

from mmneuron.cli import main
from mmneuron.data.samples import Sample, SampleError, read_metadata, read_samples, write_samples
from mmneuron.data.sources import SOURCES, base, load_source
from mmneuron.data.sources.base import Candidate, Skip, SourceError, SourceFile


def fake_source(rows, files=()):
    """A source module listing ``rows``: (sample_id, image bytes or an exception, image key) or a Skip."""

    def load(data):
        def read():
            if isinstance(data, Exception):
                raise data
            return data

        return read

    def candidates(args, split):
        yield from files
        for row in rows:
            if isinstance(row, Skip):
                yield row
            else:
                sample_id, data, key = row
                yield Candidate(sample_id, f"q {sample_id}", [f"a {sample_id}"], load(data), {"id": sample_id}, key)

    return SimpleNamespace(
        __name__="mmneuron.data.sources.fake",
        LICENCE="test terms",
        SPLITS={"stats": "train", "eval": "val"},
        candidates=candidates,
    )


def good_rows(count, per_image=1):
    return [(f"s{i}", image_bytes(i), f"img{i // per_image}") for i in range(count)]


def run(module, tmp_path, n, seed=0, **options):
    out = tmp_path / "out.parquet"
    metadata = base.prepare(module, SimpleNamespace(), "stats", n, seed, out, "dom", progress=False, **options)
    return read_samples(out), metadata, out


def test_the_draw_follows_the_seeded_order_and_writes_what_was_listed(tmp_path):
    rows = good_rows(30)
    samples, metadata, out = run(fake_source(rows), tmp_path, 7, seed=3)
    ids = [row[0] for row in rows]
    assert [sample.sample_id for sample in samples] == expected_draw(ids, 7, 3)
    for sample in samples:
        i = int(sample.sample_id[1:])
        assert sample.image == image_bytes(i) and sample.question == f"q s{i}" and sample.answers == [f"a s{i}"]
        assert sample.domain == "dom" and sample.meta == {"id": f"s{i}", "source": "fake", "split": "stats", "seed": 3}
    assert read_metadata(out) == metadata
    assert metadata["n"] == 7 and metadata["requested"] == 7 and metadata["seed"] == 3
    assert metadata["official_split"] == "train" and metadata["rows_listed"] == 30 and metadata["skipped"] == []
    assert "random.Random(3).shuffle" in metadata["draw"] and metadata["licence"] == "test terms"


def test_same_seed_same_ids_and_another_seed_others(tmp_path):
    module = fake_source(good_rows(40))
    first = [s.sample_id for s in run(module, tmp_path, 10, seed=1)[0]]
    again = [s.sample_id for s in run(module, tmp_path, 10, seed=1)[0]]
    other = [s.sample_id for s in run(module, tmp_path, 10, seed=2)[0]]
    assert first == again and first != other


def test_one_question_per_image_keeps_the_first_of_each_image_in_draw_order(tmp_path):
    rows = good_rows(24, per_image=3)  # 8 images, 3 questions each
    module = fake_source(rows)
    module.ONE_PER_IMAGE = True
    samples, metadata, _ = run(module, tmp_path, 5, seed=4)
    expected, seen = [], set()
    for sample_id in expected_draw([row[0] for row in rows], len(rows), 4):
        key = f"img{int(sample_id[1:]) // 3}"
        if key not in seen:
            seen.add(key)
            expected.append(sample_id)
    assert [s.sample_id for s in samples] == expected[:5]
    assert "first question of each image" in metadata["draw"]


def test_a_bad_image_is_a_counted_skip_replaced_by_the_next_candidate(tmp_path):
    rows = good_rows(12)
    order = expected_draw([row[0] for row in rows], 12, 0)
    broken = {order[1]: CORRUPT, order[3]: FileNotFoundError("no such file: x.jpg")}
    rows = [(sid, broken.get(sid, data), key) for sid, data, key in rows]
    samples, metadata, _ = run(fake_source(rows), tmp_path, 5, max_bad_share=0.5)
    assert [s.sample_id for s in samples] == [sid for sid in order if sid not in broken][:5]
    assert [entry["sample_id"] for entry in metadata["skipped"]] == [order[1], order[3]]
    assert "no such file: x.jpg" in metadata["skipped"][1]["reason"]


def test_too_many_bad_images_fail_naming_them_and_write_nothing(tmp_path):
    rows = [(sid, CORRUPT if sid == "s5" else data, key) for sid, data, key in good_rows(10)]
    with pytest.raises(SourceError, match=r"1 of .* images read are bad.*s5: image unreadable"):
        run(fake_source(rows), tmp_path, 10)
    assert not list(tmp_path.iterdir())


def test_malformed_rows_are_recorded_and_fail_past_the_share(tmp_path):
    rows = [*good_rows(9), Skip("bad1", "row 10: no question")]
    samples, metadata, _ = run(fake_source(rows), tmp_path, 9, max_bad_share=0.1)
    assert len(samples) == 9 and metadata["skipped"] == [{"sample_id": "bad1", "reason": "row 10: no question"}]
    with pytest.raises(SourceError, match="1 of 10 rows are bad.*bad1: row 10: no question"):
        run(fake_source(rows), tmp_path, 9, max_bad_share=0.05)


def test_fewer_candidates_than_asked_writes_them_all_and_says_so(tmp_path):
    samples, metadata, _ = run(fake_source(good_rows(3)), tmp_path, 10)
    assert len(samples) == 3 and metadata["n"] == 3 and metadata["requested"] == 10


def test_files_are_recorded_with_their_digests(tmp_path):
    listed = tmp_path / "questions.json"
    listed.write_text('{"questions": []}')
    file = base.source_file(listed)
    assert file.digest == "sha256:" + hashlib.sha256(listed.read_bytes()).hexdigest()
    out = tmp_path / "o"
    out.mkdir()
    _, metadata, _ = run(fake_source(good_rows(2), files=[file]), out, 2)
    assert metadata["files"] == [{"name": str(listed), "size": listed.stat().st_size, "digest": file.digest}]


def test_a_checksum_mismatch_names_the_file_and_both_digests(tmp_path):
    archive = tmp_path / "images.zip"
    archive.write_bytes(b"some bytes")
    md5 = hashlib.md5(b"some bytes").hexdigest()
    assert base.verify_checksum(archive, md5.upper(), "md5") == md5
    assert base.source_file(archive, ("md5", md5)).digest == f"md5:{md5}"
    wrong = "0" * 32
    with pytest.raises(SourceError, match=f"images.zip: md5 is {md5}, but the published value is {wrong}"):
        base.verify_checksum(archive, wrong, "md5")


def test_tar_members_are_read_in_one_pass_that_stops_early(tmp_path):
    payloads = {f"Data/{i}.png": image_bytes(i, "PNG") for i in range(50)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in payloads.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    found = base.read_tar_members(buffer, {"3.png", "Data/7.png", "missing.png"}, progress=False)
    assert found == {"3.png": payloads["Data/3.png"], "Data/7.png": payloads["Data/7.png"]}
    buffer.seek(0)
    base.read_tar_members(buffer, {"Data/2.png"}, progress=False)
    assert buffer.tell() < len(buffer.getvalue()) / 4  # stopped after the third member


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that answers Range requests (http.server's own ignores them)."""

    def send_head(self):
        path = self.translate_path(self.path)
        with open(path, "rb") as file:
            data = file.read()
        start, end = 0, len(data) - 1
        if "Range" in self.headers:
            first, _, last = self.headers["Range"].removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) if last else end, end)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.command == "GET":  # a HEAD sends no body
            self.server.served += end - start + 1
        return io.BytesIO(data[start : end + 1])

    def log_message(self, *args):
        pass


def test_zip_members_are_read_locally_and_over_http_ranges(tmp_path):
    members = {f"figures/PMC{i}_F1.jpg": image_bytes(i) for i in range(5)}
    big = bytes(range(256)) * 4096  # 1 MiB of padding that a range reader never fetches
    with zipfile.ZipFile(tmp_path / "images.zip", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("padding.bin", big)
        for name, data in members.items():
            archive.writestr(name, data)
    local = base.open_zip(tmp_path / "images.zip")
    assert base.zip_names(local)["PMC3_F1.jpg"] == "figures/PMC3_F1.jpg"
    assert local.read("figures/PMC3_F1.jpg") == members["figures/PMC3_F1.jpg"]

    handler = lambda *a: RangeHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.served = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        remote = base.open_zip(f"http://127.0.0.1:{server.server_port}/images.zip")
        assert remote.read("figures/PMC4_F1.jpg") == members["figures/PMC4_F1.jpg"]
        assert server.served < len(big)
    finally:
        server.shutdown()
    with pytest.raises(SourceError, match="not found: .*absent.zip"):
        base.open_zip(tmp_path / "absent.zip")


def test_samples_metadata_round_trips_and_duplicates_are_still_refused(tmp_path):
    sample = Sample("a", "d", "q", ["x"], image_bytes(1), {"k": 1})
    write_samples([sample] * 1, tmp_path / "m.parquet", metadata={"n": 1, "files": []}, rows_per_group=1)
    assert read_metadata(tmp_path / "m.parquet") == {"n": 1, "files": []}
    assert read_samples(tmp_path / "m.parquet")[0] == sample
    write_samples([sample], tmp_path / "plain.parquet")
    assert read_metadata(tmp_path / "plain.parquet") == {}
    with pytest.raises(SampleError, match="duplicate sample ids"):
        write_samples([sample, sample], tmp_path / "dup.parquet", rows_per_group=1)
    assert not (tmp_path / "dup.parquet").exists()


def test_the_registry_names_its_sources_and_refuses_others():
    assert set(SOURCES) >= {"docvqa", "folder", "lingoqa", "pmc_vqa", "rsvqa", "vqav2"}
    for name in SOURCES:
        assert load_source(name).candidates
    with pytest.raises(SourceError, match="unknown dataset source 'nope'; known: docvqa, folder, lingoqa"):
        load_source("nope")


def test_the_command_refuses_an_unknown_source_listing_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["prepare", "nope", "--split", "stats", "--n", "1", "--out", "x"])
    assert exit.value.code == 2 and "folder" in capsys.readouterr().err


def test_the_command_writes_and_logs_the_licence_once(tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(image_bytes(1, "PNG"))
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "a.png", "question": "what?", "answer": "that"}) + "\n")
    out = tmp_path / "data/mine/eval.parquet"
    argv = ["prepare", "folder", "--split", "eval", "--n", "1", "--domain", "mine", "--out", str(out)]
    argv += ["--root", str(tmp_path), "--questions", str(tmp_path / "q.jsonl"), "--no-progress"]
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    assert sum("licence of folder" in record.getMessage() for record in caplog.records) == 1
    assert [s.domain for s in read_samples(out)] == ["mine"] and read_metadata(out)["split"] == "eval"
    assert main(argv[:6] + argv[8:]) == 1  # no --domain for a source without one


def test_a_source_yielding_something_else_is_a_programming_error(tmp_path):
    module = fake_source([])
    module.candidates = lambda args, split: iter([SourceFile("f"), "oops"])
    with pytest.raises(TypeError, match="str"):
        run(module, tmp_path, 1)
