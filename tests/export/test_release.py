"""Release files of an export (export/release.py, card.py, bom.py, sign.py): the model card and datasheet say what
the real manifests say, the ML-BOM validates against the CycloneDX 1.6 schema, and a signed folder verifies until
one byte, one file or the key changes. Built on the tiny pipeline (prepare → tokenizer → shards → debug run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("model_signing", reason="pip install 'megalang[release]'")
pytest.importorskip("cyclonedx", reason="pip install 'megalang[release]'")

from huggingface_hub import ModelCard  # noqa: E402
from tiny_pipeline import cli, copy_tree, pipeline_for, train_args  # noqa: E402


def write_key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return pipeline_for(tmp_path_factory)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return write_key_pair(folder, "key"), write_key_pair(folder, "other")


@pytest.fixture(scope="module")
def signed(pipe, keys, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signed") / "release"
    code, lines, crash = cli("export", "--run", pipe.run, "--out", out, "--sign", keys[0][0])
    assert code == 0 and crash is None, lines
    return out


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# --- model card and datasheet ---------------------------------------------------------------------------


def test_card_is_built_from_the_manifests(pipe, signed):
    card = ModelCard.load(signed / "README.md")
    prepared, tok, shards = manifest(pipe.data), manifest(pipe.tokenizer), manifest(pipe.shards)
    summary = json.loads((pipe.run / "summary.json").read_text())
    text = card.text
    c = prepared["counts"]
    assert (f"{c['files']} raw files, {c['documents_in']} documents read, {c['documents_out']} kept "
            f"({c['bytes_out']:,} bytes)") in text
    for step, st in c["steps"].items():  # the per-step table: documents in, removed, left after each filter
        left = st["documents_in"] - st["documents_removed"]
        assert f"| {step} | {st['documents_in']} | {st['documents_removed']} | {left} |" in text
    kind, n = next(iter(c["documents_by_kind"].items()))
    assert f"By kind: {kind} {n}." in text
    assert f"| vocabulary size | {tok['vocab_size']} |" in text and "| type | BPE |" in text
    assert f"{shards['counts']['train_tokens']:,} training tokens" in text
    assert f"| tokens seen | {summary['tokens_seen']} |" in text and "| megalang preset | debug |" in text
    assert card.data.megalang["params"] == manifest(signed)["counts"]["params"] == summary["total_params"]
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics["val_loss"] == pytest.approx(summary["val_loss"])
    assert "Not trained with differential privacy" in text and card.data.library_name == "transformers"


def test_datasheet_lists_the_raw_files_by_sha256(pipe, signed):
    sheet = (signed / "DATASHEET.md").read_text()
    raw = [i for i in manifest(pipe.data)["inputs"] if i["kind"] == "raw"]
    assert raw and all(f"| {r['path']} | {r['size']:,} | {r['sha256']} |" in sheet for r in raw)
    for section in ("## Motivation", "## Composition", "## Collection process", "## Preprocessing", "## Uses",
                    "## Distribution", "## Maintenance"):
        assert section in sheet
    assert "Created by / funded by: not recorded" in sheet


# --- the ML-BOM -----------------------------------------------------------------------------------------


def test_bom_validates_and_lists_files_datasets_and_libraries(pipe, signed):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = (signed / "bom.cdx.json").read_text()
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(text) is None
    bom = json.loads(text)
    broken = json.loads(text)
    broken["metadata"]["component"]["modelCard"]["modelParameters"]["approach"]["type"] = "guessing"
    assert validator.validate_str(json.dumps(broken)) is not None  # the validator does check the model card

    model = bom["metadata"]["component"]
    assert model["type"] == "machine-learning-model" and model["modelCard"]["modelParameters"]["datasets"]
    files = {c["name"]: c["hashes"][0]["content"] for c in model["components"]}
    recorded = manifest(signed)["files"]
    assert files == {rel: info["sha256"] for rel, info in recorded.items() if rel != "bom.cdx.json"}
    data = {c["bom-ref"]: c for c in bom["components"] if c["type"] == "data"}
    for raw in (i for i in manifest(pipe.data)["inputs"] if i["kind"] == "raw"):
        assert data[f"raw:{raw['path']}"]["hashes"][0]["content"] == raw["sha256"]
    assert data[f"artifact:{pipe.shards.resolve()}"]["hashes"][0]["content"] == \
        manifest(pipe.run)["inputs"][0]["manifest_sha256"]
    libraries = {c["name"]: c for c in bom["components"] if c["type"] == "library"}
    torch_version = manifest(signed)["libraries"]["torch"]
    assert libraries["torch"]["version"] == torch_version
    assert libraries["torch"]["purl"] == "pkg:pypi/torch@" + torch_version.replace("+", "%2B")
    deps = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert f"artifact:{pipe.run.resolve()}" in deps["model"] and "lib:torch" in deps["model"]
    assert f"artifact:{pipe.data.resolve()}" in deps[f"artifact:{pipe.shards.resolve()}"]


# --- signing and verifying ------------------------------------------------------------------------------


def test_signed_release_verifies(signed, keys):
    assert (signed / "model.sig").is_file() and "model.sig" not in manifest(signed)["files"]
    code, lines, _ = cli("verify", signed, "--key", keys[0][1])
    assert code == 0 and lines == [f"ok: {signed} (signature verified with {keys[0][1]})"]


def test_one_changed_byte_is_named(signed, keys, tmp_path):
    out = copy_tree(signed, tmp_path / "release")
    flip_byte(out / "model.safetensors")
    code, lines, _ = cli("verify", out, "--key", keys[0][1])
    assert code == 1 and lines == [f"mismatch: {out / 'model.safetensors'}: SHA-256 mismatch"]


def test_a_rewritten_manifest_is_caught_by_the_signature(signed, keys, tmp_path):
    """Change a file and record its new hash in manifest.json: the manifest check passes, the signature names both."""
    from megalang.store.files import sha256_file

    out = copy_tree(signed, tmp_path / "release")
    target = out / "tokenizer_config.json"
    target.write_text(target.read_text().replace("{", "{ ", 1))
    m = manifest(out)
    m["files"]["tokenizer_config.json"] = {"size": target.stat().st_size, "sha256": sha256_file(target)}
    (out / "manifest.json").write_text(json.dumps(m, indent=2))
    assert cli("verify", out)[0] == 0
    code, lines, _ = cli("verify", out, "--key", keys[0][1])
    changed = "changed since signing (SHA-256 differs from the signed one)"
    assert code == 1 and lines == [f"mismatch: {out / 'manifest.json'}: {changed}",
                                   f"mismatch: {target}: {changed}"]


def test_a_file_added_after_signing_is_named(signed, keys, tmp_path):
    out = copy_tree(signed, tmp_path / "release")
    (out / "notes.txt").write_text("added later\n")
    code, lines, _ = cli("verify", out, "--key", keys[0][1])
    assert code == 1 and lines == [f"mismatch: {out / 'notes.txt'}: not covered by the signature (added after signing)"]


def test_a_wrong_public_key_fails_clearly(signed, keys):
    code, lines, _ = cli("verify", signed, "--key", keys[1][1])
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"mismatch: {signed / 'model.sig'}: does not verify with {keys[1][1]} "
                               "(signed with another key")


def test_an_unsigned_folder_with_key_and_a_missing_public_key(pipe, keys, tmp_path):
    code, lines, _ = cli("verify", pipe.export, "--key", keys[0][1])
    assert code == 1 and lines == [f"mismatch: {pipe.export / 'model.sig'}: missing; the folder was not signed "
                                   "(megalang export --sign KEY)"]
    code, lines, _ = cli("verify", pipe.export, "--key", tmp_path / "absent.pem")
    assert code == 2 and len(lines) == 1 and "no such public key file" in lines[0]


@pytest.mark.parametrize("bad", ["missing", "garbage", "public"])
def test_a_bad_signing_key_leaves_nothing(pipe, keys, tmp_path, bad):
    key = {"missing": tmp_path / "nope.pem", "garbage": tmp_path / "garbage.pem", "public": keys[0][1]}[bad]
    if bad == "garbage":
        key.write_text("-----BEGIN EC PRIVATE KEY-----\nnot a key\n-----END EC PRIVATE KEY-----\n")
    out = tmp_path / "out"
    code, lines, crash = cli("export", "--run", pipe.run, "--out", out, "--sign", key)
    assert code == 2 and crash is None and len(lines) == 1 and lines[0].startswith(f"error: --sign {key}: ")
    assert not out.exists() and not out.with_name("out.tmp").exists()


# --- other origins: a LoRA run, an export of an export, a DP run whose shards were moved away ----------------


def test_lora_adapter_export_names_its_base_model(pipe, keys, tmp_path):
    run, out = tmp_path / "lora", tmp_path / "adapter"
    code, lines, _ = cli(*train_args(pipe.shards, run, f"model.pretrained={pipe.export}", "lora.rank=4"))
    assert code == 0, lines
    code, lines, _ = cli("export", "--run", run, "--out", out, "--sign", keys[0][0])
    assert code == 0, lines
    assert manifest(out)["format"] == "peft" and cli("verify", out, "--key", keys[0][1])[0] == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and f"| base model | {pipe.export} |" in card.text
    assert "LoRA rank 4" in card.text and "| megalang preset |" not in card.text
    # The base is itself a megalang export: its lineage (the pipeline's prepared set) is in the datasheet.
    assert f"| {pipe.export.resolve()} |" in card.text and "### data\n" in (out / "DATASHEET.md").read_text()
    bom = json.loads((out / "bom.cdx.json").read_text())
    assert f"artifact:{pipe.export.resolve()}" in next(d["dependsOn"] for d in bom["dependencies"] if d["ref"] == "model")


def test_an_export_of_an_export(pipe, signed, tmp_path):
    from megalang.export.release import Release
    from megalang.export.source import load_source

    dest = tmp_path / "again"
    dest.mkdir()
    source = load_source(signed)
    files = Release(dest, "hf", None, None).describe_source(dest, source)
    card = ModelCard.load(dest / "README.md")
    assert f"Exported from the export `{signed.resolve()}`" in card.text
    assert "| train | " + str(pipe.run.resolve()) in card.text  # the chain goes on through the run
    assert card.data.megalang["tokens_seen"] == json.loads((pipe.run / "summary.json").read_text())["tokens_seen"]
    assert set(files) >= {"README.md", "DATASHEET.md"} and (dest / "bom.cdx.json").is_file()


def test_dp_run_with_filtered_documents_then_its_prepared_set_moved(pipe, tmp_path):
    """A corpus where prepare drops documents (a too-short file, a duplicate) and a DP run on it: the card's
    per-step counts are the manifest's and ε is the run's. Then the prepared set is moved away: exported again,
    the card and the BOM mark it missing and keep what the shards still say."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    corpus = copy_tree(pipe.corpus, tmp_path / "corpus")
    shutil.copyfile(corpus / "heapq.py", corpus / "heapq_copy.py")
    (corpus / "short.py").write_text("x = 1\n")
    data, shards, run = (tmp_path / n for n in ("data", "shards", "dp"))
    for args in (("data", "prepare", "-i", corpus, "-o", data),
                 ("data", "tokenize", "-i", data, "--tokenizer", pipe.tokenizer, "-o", shards, "--val-fraction", 0.2),
                 train_args(shards, run, "privacy.target_epsilon=8", "privacy.delta=1e-4", "data.packing=false"),
                 ("export", "--run", run, "--out", tmp_path / "out")):
        code, lines, crash = cli(*args)
        assert code == 0 and crash is None, lines

    card = ModelCard.load(tmp_path / "out" / "README.md")
    c = manifest(data)["counts"]
    assert c["steps"]["length"]["documents_removed"] == 1 and c["steps"]["exact_dedup"]["documents_removed"] == 1
    for step, st in c["steps"].items():
        left = st["documents_in"] - st["documents_removed"]
        assert f"| {step} | {st['documents_in']} | {st['documents_removed']} | {left} |" in card.text
    assert f"**data** (`megalang data prepare`): {c['files']} raw files, {c['documents_in']} documents read, " \
           f"{c['documents_out']} kept" in card.text and c["documents_out"] == 6
    summary = json.loads((run / "summary.json").read_text())
    assert card.data.megalang["epsilon"] == summary["epsilon"] and 0 < summary["epsilon"] <= 8.1
    assert f"(ε = {summary['epsilon']:.4g}, δ = 0.0001)" in card.text and "DP-SGD" in card.text

    shutil.move(data, tmp_path / "elsewhere")
    code, lines, crash = cli("export", "--run", run, "--out", tmp_path / "out2")
    assert code == 0 and crash is None, lines
    text = (tmp_path / "out2" / "README.md").read_text()
    assert f"| data.prepare | {data} | " in text and "| missing (moved or deleted" in text
    assert f"**data** (data.prepare): missing at {data}" in text
    assert f"{manifest(shards)['counts']['train_tokens']:,} training tokens" in text
    bom = (tmp_path / "out2" / "bom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(bom) is None
    missing = next(c for c in json.loads(bom)["components"] if c["bom-ref"] == f"artifact:{data}")
    assert {"name": "megalang:status", "value": "missing"} in missing["properties"]
    assert missing["hashes"][0]["content"] == manifest(shards)["inputs"][0]["manifest_sha256"]


def test_a_run_that_did_not_finish(pipe, tmp_path):
    """No manifest.json, no summary.json: the inputs come from the checkpoint, the losses from metrics.jsonl; the
    export names the run by the checkpoint it read, verifies, and `lineage --find` reaches it through the run."""
    from megalang.store.lineage import find

    run, out = copy_tree(pipe.run, tmp_path / "run"), tmp_path / "out"
    (run / "manifest.json").unlink(), (run / "summary.json").unlink()
    code, lines, crash = cli("export", "--run", run, "--out", out)
    assert code == 0 and crash is None, lines
    text = (out / "README.md").read_text()
    assert "has no manifest.json (it did not finish); its inputs are read from its checkpoint" in text
    assert f"| data.tokenize | {pipe.shards.resolve()} | " in text and "### data\n" in (out / "DATASHEET.md").read_text()
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert f"→ {last['loss']:.4g} |" in text
    (source,) = json.loads((out / "manifest.json").read_text())["inputs"]
    assert (source["stage"], source["manifest_sha256"], source["checkpoint"]) == ("train", None, "step-2")
    assert cli("verify", out)[0] == 0
    hits = find(str(pipe.corpus / "heapq.py"), [pipe.data, pipe.tokenizer, pipe.shards, tmp_path])["hits"]
    assert {h["path"] for h in hits} >= {str(run.resolve()), str(out.resolve())}


def test_card_names_the_optimizer_and_schedule_shape_the_run_used():
    from megalang.export.card import optimizer_text, schedule_text

    opt = {"lr": 2e-3, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1, "grad_clip": 1.0, "muon_lr": None,
           "muon_weight_decay": None, "muon_momentum": 0.95, "muon_adjust_lr": "match_rms_adamw"}
    assert optimizer_text("adamw", opt).startswith("AdamW, β=(0.9, 0.95)")
    muon = optimizer_text("muon", opt)
    assert muon.startswith("Muon for the blocks' matrices (lr 0.002, momentum 0.95, weight decay 0.1") and "AdamW" in muon
    assert schedule_text({"warmup_steps": 30, "min_lr": 2e-4}) == "linear warmup 30 steps, cosine to 0.0002"
    assert "linear to 0.0 over the last 0.3" in schedule_text({"shape": "wsd", "warmup_steps": 30, "min_lr": 0.0,
                                                             "decay_fraction": 0.3})
