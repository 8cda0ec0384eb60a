"""plan_data.py against hand-computed hours; the packaged rates file; bad rates files; the CLI's `plan data`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from megalang.cli.app import app
from megalang.config import DataPlanConfig
from megalang.errors import UserError
from megalang.plan_data import STAGES, load_rates, plan_data

RATES = {"measured": "test", "bytes_per_token": 4.0,
         "stages": {"prepare": {"mb_per_core_s": 2.0, "speedup_2_workers": 1.8},
                    "near_dedup": {"mb_per_core_s": 10.0, "speedup_2_workers": 1.5},
                    "tokenizer": {"seconds": 720.0, "sample_mb": 100.0},
                    "tokenize": {"mb_per_core_s": 8.0, "speedup_2_workers": 2.2}}}


@pytest.fixture
def rates(tmp_path):
    path = tmp_path / "rates.json"
    path.write_text(json.dumps(RATES))
    return str(path)


def test_hours_by_hand(rates):
    r = plan_data(DataPlanConfig(tokens=1e12, workers=100, kept_fraction=0.25, rates=rates))
    kept, raw = 4e12, 16e12  # 1e12 tokens × 4 bytes; / 0.25
    assert r["kept_bytes"] == kept and r["raw_bytes"] == raw and r["shard_bytes"] == 4e12
    s = r["stages"]
    assert s["prepare"]["core_hours"] == pytest.approx(raw / 1e6 / 2.0 / 0.9 / 3600)  # the parallel loss is paid
    assert s["prepare"]["hours"] == pytest.approx(raw / 1e6 / 2.0 / (100 * 0.9) / 3600)
    assert s["near_dedup"]["hours"] == pytest.approx(raw / 1e6 / 10.0 / (100 * 0.75) / 3600)
    assert s["tokenize"]["efficiency"] == 1.0  # a superlinear 2-worker measurement is not extrapolated
    assert s["tokenize"]["hours"] == pytest.approx(kept / 1e6 / 8.0 / 100 / 3600)
    assert s["tokenizer"]["hours"] == pytest.approx(0.2) and s["tokenizer"]["core_hours"] == pytest.approx(0.2)
    assert r["bottleneck"] == "prepare"
    assert r["hours"] == pytest.approx(sum(s[name]["hours"] for name in STAGES))
    assert r["feasible"] and any("measured at 2 workers" in n for n in r["notes"])


def test_one_worker_has_no_parallel_loss(rates):
    r = plan_data(DataPlanConfig(tokens=1e9, workers=1, rates=rates))
    for name in ("prepare", "near_dedup", "tokenize"):
        assert r["stages"][name]["hours"] == pytest.approx(r["stages"][name]["core_hours"])
    assert any("kept_fraction 1.0" in n for n in r["notes"])


def test_deadline_verdict_names_the_cores_that_meet_it(rates):
    cfg = DataPlanConfig(tokens=1e13, workers=64, kept_fraction=0.2, rates=rates, deadline_days=7)
    r = plan_data(cfg)
    assert not r["feasible"] and "deadline 7 days" in r["reasons"][0]
    need = int(r["reasons"][0].split("about ")[1].split(" cores")[0].replace(",", ""))
    assert plan_data(cfg.model_copy(update={"workers": need}))["feasible"]
    assert not plan_data(cfg.model_copy(update={"workers": need - 1}))["feasible"]


def test_bytes_per_token_overrides_the_measurement(rates):
    r = plan_data(DataPlanConfig(tokens=1e9, workers=8, bytes_per_token=3.0, rates=rates))
    assert r["bytes_per_token"] == 3.0 and r["kept_bytes"] == 3e9


def test_packaged_rates_are_complete():
    rates, source = load_rates(None)
    assert source.endswith("plan_data_rates.json")
    assert rates["command"].startswith("python bench/data_stages.py")  # where the numbers came from


@pytest.mark.parametrize("content, field", [
    ("", "not JSON"), ("\xff\xfe", "cannot read"), ("[]", "'stages'"),
    (json.dumps({**RATES, "bytes_per_token": "4"}), "bytes_per_token"),
    (json.dumps({**RATES, "stages": {**RATES["stages"], "tokenize": {"mb_per_core_s": 0, "speedup_2_workers": 2}}}),
     "stages.tokenize.mb_per_core_s"),
    (json.dumps({**RATES, "stages": {k: v for k, v in RATES["stages"].items() if k != "near_dedup"}}),
     "stages.near_dedup"),
])
def test_bad_rates_files_name_the_field(tmp_path, content, field):
    path = tmp_path / "rates.json"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(UserError, match=field):
        load_rates(str(path))


def test_cli_plan_data(rates, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["plan", "data", "--tokens", "10T", "--workers", "512", "--kept-fraction", "0.2",
                            "--rates", rates, "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["tokens"] == 1e13 and got["workers"] == 512 and got["bottleneck"] == "prepare"
    text = runner.invoke(app, ["plan", "data", "--tokens", "1e13", "--workers", "512", "--rates", rates])
    assert text.exit_code == 0 and "← bottleneck" in text.output and "core-hours" in text.output
    late = runner.invoke(app, ["plan", "data", "--tokens", "1e13", "--workers", "2", "--rates", rates,
                               "--deadline-days", "1"])
    assert late.exit_code == 1 and "NOT FEASIBLE" in late.output
    for args, message in ((["--gpus", "8"], "--gpus"), (["--rates", str(tmp_path / "none.json")], "no such rates"),
                          (["--workers", "0"], "workers")):
        bad = runner.invoke(app, ["plan", "data", "--tokens", "1e9", "--workers", "4", *args])
        assert bad.exit_code == 2 and message in bad.output, bad.output
    train = runner.invoke(app, ["plan", "--preset", "debug", "--tokens", "1e6", "--workers", "4"])
    assert train.exit_code == 2 and "plan data" in train.output



def test_bench_rates_file_is_what_the_plan_reads(tmp_path, monkeypatch):
    """bench/data_stages.py's --write conversion on a result line of its shape: per-core MB/s from the 1-worker Ray
    row, 2-worker speedup as throughput ratio, near-dedup documents/s at the corpus's document size."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    sys.modules.pop("data_stages", None)
    from data_stages import write_plan_rates

    def row(mb: float, docs: float) -> dict:
        return {"prepare_map": {"mb_per_s_per_core": mb}, "tokenize": {"mb_per_s_per_core": 2 * mb},
                "near_dedup_at_scale": {"docs_per_s_per_core": docs}}

    line = {"tokenizer": {"seconds": 3.0, "sample_mb": 5.0}, "ray-1": row(1.6, 200_000), "ray-2": row(1.2, 100_000)}
    out = tmp_path / "rates.json"
    write_plan_rates(out, line, bytes_per_token=3.5, doc_bytes=1500, argv=["--write", str(out)])
    rates, _ = load_rates(str(out))
    s = rates["stages"]
    assert s["prepare"] == {"mb_per_core_s": 1.6, "speedup_2_workers": 1.5, "measured_as": "prepare_map"}
    assert s["tokenize"]["mb_per_core_s"] == 3.2 and s["tokenize"]["speedup_2_workers"] == 1.5
    assert s["near_dedup"]["mb_per_core_s"] == 300.0 and s["near_dedup"]["speedup_2_workers"] == 1.0
    assert s["tokenizer"] == {"seconds": 3.0, "sample_mb": 5.0} and rates["bytes_per_token"] == 3.5
    assert not list(tmp_path.glob("*.tmp"))
