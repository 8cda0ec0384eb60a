"""artifacts.py: manifests, verify, lineage, the staging folder."""

import json

import pytest

from megalang.cli.artifacts import verify
from megalang.errors import UserError
from megalang.store.files import sha256_file, staging_dir
from megalang.store.manifest import MANIFEST, describe_input, lineage, read_manifest, write_manifest


def make_chain(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("hello world\n")
    with staging_dir(tmp_path / "a") as a:
        (a / "docs.txt").write_text("hello world")
        write_manifest(a, "data.prepare", {"x": 1}, [describe_input(raw)], {"documents": 1})
    with staging_dir(tmp_path / "b") as b:
        (b / "sub").mkdir()
        (b / "sub" / "t.bin").write_bytes(b"\x00\x01")
        write_manifest(b, "data.tokenize", {}, [describe_input(tmp_path / "a")], {"tokens": 2})
    return raw, tmp_path / "a", tmp_path / "b"


def test_manifest_records_files_inputs_and_versions(tmp_path):
    raw, a, b = make_chain(tmp_path)
    m = read_manifest(b)
    assert m["stage"] == "data.tokenize"
    assert m["files"]["sub/t.bin"]["sha256"] == sha256_file(b / "sub" / "t.bin")
    assert m["inputs"][0]["manifest_sha256"] == sha256_file(a / MANIFEST)
    assert "torch" in m["libraries"] and m["megalang_version"]
    assert read_manifest(a)["inputs"][0] == {"path": str(raw.resolve()), "kind": "raw", "size": 12, "sha256": sha256_file(raw)}


def test_verify_names_a_flipped_byte(tmp_path):
    _, a, b = make_chain(tmp_path)
    assert verify(b) == []
    data = bytearray((b / "sub" / "t.bin").read_bytes())
    data[0] ^= 1
    (b / "sub" / "t.bin").write_bytes(bytes(data))
    problems = verify(b)
    assert len(problems) == 1 and "t.bin" in problems[0] and "SHA-256" in problems[0]
    (b / "sub" / "t.bin").unlink()
    assert "missing" in verify(b)[0]


def test_verify_notices_a_changed_input_artifact(tmp_path):
    _, a, b = make_chain(tmp_path)
    m = json.loads((a / MANIFEST).read_text())
    m["counts"]["documents"] = 2
    (a / MANIFEST).write_text(json.dumps(m))
    assert any("input artifact changed" in p for p in verify(b))


def test_lineage_walks_back_to_the_raw_input(tmp_path):
    _, a, b = make_chain(tmp_path)
    chain = lineage(b)
    assert [(n["stage"], n["depth"]) for n in chain] == [("data.tokenize", 0), ("data.prepare", 1)]
    assert chain[1]["raw_inputs"] == 1 and chain[1]["raw_bytes"] == 12


def test_staging_dir_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staging_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not out.exists() and not (tmp_path / "out.tmp").exists()


def test_staging_dir_refuses_existing_output_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "f").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        with staging_dir(out):
            pass
    with staging_dir(out, overwrite=True) as tmp:
        (tmp / "g").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["g"]


def test_not_an_artifact(tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_manifest(tmp_path)
    with pytest.raises(UserError, match="no such folder"):
        read_manifest(tmp_path / "missing")
