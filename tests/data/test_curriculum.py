"""data/curriculum.py: the train split written in difficulty order with stages in the manifest, and the loader
walking those stages (shuffled within, seed-deterministic, resumable, rank-independent) in the first epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from megalang.cli import app
from megalang.cli.artifacts import verify
from megalang.config import CurriculumConfig, PrepareConfig, TokenizeConfig
from megalang.data.curriculum import assign_stages
from megalang.data.documents import iter_prepared
from megalang.data.loader import SampleLoader
from megalang.data.pipeline import prepare
from megalang.data.shards import open_split, read_shard_manifest
from megalang.data.tokenize import tokenize
from megalang.errors import UserError

SEQ = 16


def tokenize_with(prepared, tokenizer, out, **curriculum):
    return tokenize(TokenizeConfig(input=str(prepared), tokenizer=str(tokenizer), out=str(out), val_fraction=0,
                                   val_sources=["json/*"], tokens_per_shard=4096,
                                   curriculum=CurriculumConfig(**curriculum)))


@pytest.fixture(scope="module")
def staged_dir(prepared_dir, tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("staged") / "shards"
    tokenize_with(prepared_dir, tokenizer_dir, out, by="length", stages=3)
    return out


@pytest.fixture(scope="module")
def staged(staged_dir):
    m = read_shard_manifest(staged_dir)
    return m, open_split(staged_dir, "train", m)


def stage_of_window(stages, seq_len):
    """Window index → stage, from the manifest's token ranges (independent of the loader's own arithmetic)."""
    firsts = [s["first_token"] for s in stages]
    return lambda w: int(np.searchsorted(firsts, w * seq_len, side="right")) - 1


def epoch_windows(loader, epoch=0):
    return [loader.sample_index(epoch * loader.num_samples + p) for p in range(loader.num_samples)]


# --- tokenize: order and manifest ---------------------------------------------------------------------


def test_train_documents_are_sorted_by_length_and_stages_tile_the_split(staged, shards_dir):
    m, split = staged
    cur = m["curriculum"]
    assert (cur["by"], cur["order"], len(cur["stages"])) == ("length", "easy_first", 3)
    lengths = [len(d) for d in split.documents()]
    assert lengths == sorted(lengths)
    stages = cur["stages"]
    assert [s["first_token"] for s in stages] == [0] + list(np.cumsum([s["tokens"] for s in stages[:-1]]))
    assert [s["first_document"] for s in stages] == [0] + list(np.cumsum([s["documents"] for s in stages[:-1]]))
    assert sum(s["tokens"] for s in stages) == m["counts"]["train_tokens"] == len(split)
    assert sum(s["documents"] for s in stages) == m["counts"]["train_documents"]
    for a, b in zip(stages, stages[1:]):
        assert a["score_max"] <= b["score_min"]  # difficulty never decreases from one stage to the next
    # Same documents as without a curriculum, only reordered; val untouched.
    plain = read_shard_manifest(shards_dir)
    assert sorted(map(tuple, split.documents())) == sorted(map(tuple, open_split(shards_dir, "train", plain).documents()))
    assert m["splits"]["val"] == plain["splits"]["val"]
    assert "curriculum" not in plain


def test_scratch_files_are_gone_and_the_artifact_verifies(staged_dir):
    assert not (staged_dir / ".curriculum").exists()
    assert verify(staged_dir) == []


def test_equal_token_stages_and_explicit_boundaries():
    lengths = np.array([10, 10, 10, 10, 30, 30])
    cfg = CurriculumConfig(by="length", stages=2)
    assert assign_stages(lengths.astype(float), lengths, cfg).tolist() == [0, 0, 0, 0, 0, 1]
    cfg = CurriculumConfig(by="length", boundaries=[10, 20])
    assert assign_stages(np.array([5, 10, 15, 25.0]), lengths[:4], cfg).tolist() == [0, 1, 1, 2]
    cfg = CurriculumConfig(by="length", boundaries=[10, 20], order="hard_first")
    assert assign_stages(np.array([25, 15, 10, 5.0]), lengths[:4], cfg).tolist() == [0, 1, 1, 2]


def test_column_scores_from_a_file_hard_first_with_boundaries(prepared_dir, tokenizer_dir, tmp_path, staged):
    rows = list(iter_prepared(prepared_dir))
    scores = {r["id"]: (len(r["text"]) % 97) / 10 for r in rows}  # unrelated to length: a real reordering
    with open(tmp_path / "scores.jsonl", "w") as f:
        for i, s in scores.items():
            f.write(json.dumps({"id": i, "quality": s}) + "\n")
    out = tmp_path / "shards"
    m = tokenize_with(prepared_dir, tokenizer_dir, out, by="column:quality", scores=str(tmp_path / "scores.jsonl"),
                      boundaries=[3.0, 6.0], order="hard_first")
    stages = m["curriculum"]["stages"]
    assert len(stages) == 3 and m["curriculum"]["scores"]["sha256"]
    assert stages[0]["score_min"] >= 6.0 and stages[2]["score_max"] < 3.0
    assert 3.0 <= stages[1]["score_min"] and stages[1]["score_max"] < 6.0
    train_scores = sorted((s for r, s in zip(rows, scores.values()) if "/json/" not in r["source"]), reverse=True)
    assert [s["documents"] for s in stages] == [sum(6 <= s for s in train_scores),
                                                sum(3 <= s < 6 for s in train_scores), sum(s < 3 for s in train_scores)]


# --- loader: stages in order, shuffled within, resumable, rank-independent ----------------------------


def test_first_epoch_walks_the_stages_in_order_shuffled_within(staged):
    m, split = staged
    loader = SampleLoader(split, SEQ, micro_batch=4, seed=7, curriculum=m["curriculum"])
    stage = stage_of_window(m["curriculum"]["stages"], SEQ)
    windows = epoch_windows(loader)
    stages = [stage(w) for w in windows]
    assert stages == sorted(stages) and set(stages) == {0, 1, 2}
    assert sorted(windows) == list(range(loader.num_samples))
    for k in range(3):
        within = [w for w, s in zip(windows, stages) if s == k]
        assert within != sorted(within)  # shuffled, not read in file order
    # Deterministic given the seed; another seed shuffles differently but keeps the stage order.
    assert epoch_windows(SampleLoader(split, SEQ, 4, seed=7, curriculum=m["curriculum"])) == windows
    other = epoch_windows(SampleLoader(split, SEQ, 4, seed=8, curriculum=m["curriculum"]))
    assert other != windows and [stage(w) for w in other] == stages


def test_later_epochs_shuffle_globally(staged):
    m, split = staged
    loader = SampleLoader(split, SEQ, 4, seed=7, curriculum=m["curriculum"])
    stage = stage_of_window(m["curriculum"]["stages"], SEQ)
    second = [stage(w) for w in epoch_windows(loader, epoch=1)]
    assert second != sorted(second)
    plain = SampleLoader(split, SEQ, 4, seed=7)
    assert epoch_windows(loader, 1) == epoch_windows(plain, 1)


def batches(loader, n):
    return [next(loader)[0] for _ in range(n)]


def test_resume_mid_stage_gives_the_uninterrupted_sequence(staged):
    m, split = staged
    make = lambda: SampleLoader(split, SEQ, 3, seed=5, curriculum=m["curriculum"])  # noqa: E731
    full = batches(make(), 40)
    first = make()
    batches(first, 17)  # 51 windows: inside stage 0 (a third of the split is ~100 windows)
    assert 0 < first.consumed < first.stages[1]
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # the checkpoint stores it as JSON
    for a, b in zip(full[17:], batches(resumed, 23), strict=True):
        assert torch.equal(a, b)


def test_two_ranks_cover_what_one_rank_reads(staged):
    m, split = staged
    one = SampleLoader(split, SEQ, 4, seed=2, curriculum=m["curriculum"])
    pair = [SampleLoader(split, SEQ, 2, seed=2, rank=r, world=2, curriculum=m["curriculum"]) for r in (0, 1)]
    for _ in range(30):
        whole = next(one)[0]
        halves = [next(p)[0] for p in pair]
        assert torch.equal(whole, torch.cat(halves))


def test_resume_refuses_a_different_curriculum(staged):
    m, split = staged
    staged_loader = SampleLoader(split, SEQ, 2, seed=0, curriculum=m["curriculum"])
    with pytest.raises(UserError, match="curriculum"):
        SampleLoader(split, SEQ, 2, seed=0).load_state_dict(staged_loader.state_dict())


# --- manifest: mixture; bad config → one line, exit 2 -------------------------------------------------


def test_resolved_mixture_is_recorded_in_the_shard_manifest(tmp_path, tokenizer_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, n in (("books.jsonl", 6), ("web.jsonl", 6)):
        with open(corpus / name, "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"{name} document number {i} with some words in it"}) + "\n")
    prepared = tmp_path / "prepared"
    prepare(PrepareConfig(inputs=[str(corpus)], out=str(prepared), workers=1, mixture={"books.jsonl": 2.0},
                          progress=False, steps=["normalize", "length", "exact_dedup"]))  # templated: no quality
    m = tokenize(TokenizeConfig(input=str(prepared), tokenizer=str(tokenizer_dir), out=str(tmp_path / "s"),
                                val_fraction=0, curriculum=CurriculumConfig(by="chars", stages=2)))
    assert m["mixture"]["books.jsonl"]["epochs"] == 2.0
    assert m["mixture"]["books.jsonl"]["documents_out"] == 12
    assert m["counts"]["train_documents"] == 18 and m["curriculum"]["by"] == "chars"


def run_cli(prepared_dir, tokenizer_dir, out, *sets):
    args = ["data", "tokenize", "-i", str(prepared_dir), "--tokenizer", str(tokenizer_dir), "-o", str(out)]
    for s in sets:
        args += ["--set", s]
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("sets, expected", [
    (["curriculum.by=column:nope"], "curriculum.by=column:nope: needs curriculum.scores"),
    (["curriculum.by=column:nope", "curriculum.scores=SCORES"], "curriculum.by=column:nope: "),
    (["curriculum.by=column:q", "curriculum.scores=missing.jsonl"], "curriculum.scores: "),
    (["curriculum.by=length", "curriculum.scores=SCORES"], "curriculum.scores is only read with curriculum.by=column"),
    (["curriculum.by=difficulty"], "curriculum.by='difficulty'"),
    (["curriculum.by=length", "curriculum.boundaries=[5, 1]"], "curriculum.boundaries must be sorted"),
])
def test_bad_config_is_one_line_and_exit_2(prepared_dir, tokenizer_dir, tmp_path, sets, expected):
    (tmp_path / "scores.jsonl").write_text(json.dumps({"id": "x", "quality": 1.0}) + "\n")
    sets = [s.replace("SCORES", str(tmp_path / "scores.jsonl")) for s in sets]
    result = run_cli(prepared_dir, tokenizer_dir, tmp_path / "out", *sets)
    assert result.exit_code == 2, result.output
    assert expected in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_sets_the_curriculum(prepared_dir, tokenizer_dir, tmp_path):
    result = run_cli(prepared_dir, tokenizer_dir, tmp_path / "out", "curriculum.by=chars", "curriculum.stages=2")
    assert result.exit_code == 0, result.output
    cur = read_shard_manifest(tmp_path / "out")["curriculum"]
    assert cur["by"] == "chars" and len(cur["stages"]) == 2 and cur["stages"][0]["score_max"] <= cur["stages"][1]["score_min"]


def test_non_numeric_score_names_the_field_and_leaves_nothing(prepared_dir, tokenizer_dir, tmp_path):
    rows = list(iter_prepared(prepared_dir))
    with open(tmp_path / "s.jsonl", "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"id": r["id"], "q": "high" if i == 3 else 1.0}) + "\n")
    result = run_cli(prepared_dir, tokenizer_dir, tmp_path / "out", "curriculum.by=column:q",
                     f"curriculum.scores={tmp_path / 's.jsonl'}")
    assert result.exit_code == 2, result.output
    assert "curriculum.by=column:q" in result.output and "'high'" in result.output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out*"))


# --- training follows the stages ----------------------------------------------------------------------


def train_two_steps(shards, run_dir, curriculum: bool, steps: int = 2) -> dict:
    """The loader state a 2-step debug run checkpoints."""
    from megalang.config import RunConfig
    from megalang.train.trainer import train

    cfg = RunConfig.model_validate({
        "model": {"preset": "debug"}, "data": {"shards": str(shards), "curriculum": curriculum}, "seed": 3,
        "train": {"max_steps": steps, "seq_len": SEQ, "micro_batch_size": 2, "warmup_steps": 1, "log_every": 1,
                  "eval_batches": 1, "progress": False, "device": "cpu"},
        "checkpoint": {"every": 2, "keep": 1}, "run": {"dir": str(run_dir)},
    })
    train(cfg)
    return json.loads((run_dir / "checkpoints" / "step-2" / "trainer_state.json").read_text())["loader"]


def test_training_run_follows_the_shards_curriculum_unless_switched_off(staged, staged_dir, tmp_path):
    m, split = staged
    expected = SampleLoader(split, SEQ, 2, seed=3, curriculum=m["curriculum"])
    state = train_two_steps(staged_dir, tmp_path / "on", curriculum=True)
    assert state["stages"] == expected.stages and state["consumed"] == 4
    assert expected.stages[0] == 0 and expected.stages[-1] == expected.num_samples
    assert train_two_steps(staged_dir, tmp_path / "off", curriculum=False)["stages"] is None
    with pytest.raises(UserError, match="curriculum"):  # resuming with the order switched off would not replay it
        train_two_steps(staged_dir, tmp_path / "on", curriculum=False, steps=4)


@pytest.mark.parametrize("values, ok", [([1.0, 0.5], True), ([1, 3], True), ([1.0, float("nan")], False),
                                        ([1.0, None], False), (["1.0", "high"], False)])
def test_parquet_scores_must_be_finite_numbers(tmp_path, values, ok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from megalang.data.curriculum import load_score_file

    path = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "q": pa.array(values)}), path)
    if ok:
        assert load_score_file(path, "q") == {"a": float(values[0]), "b": float(values[1])}
    else:
        with pytest.raises(UserError, match=r"curriculum.by=column:q: document [ab] has score"):
            load_score_file(path, "q")
