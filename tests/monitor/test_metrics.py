"""monitor/metrics.py: JSON lines that survive resumes and torn writes; pluggable backends."""

import json

import numpy as np
import torch

from megalang.monitor.metrics import MetricsSink, read_metrics


def test_log_appends_flushed_json_lines(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    sink = MetricsSink(path)
    sink.log(1, loss=torch.tensor(2.5), lr=1e-3, tokens=np.int64(128))
    # Flushed per line: readable before close.
    first = json.loads(path.read_text().splitlines()[0])
    assert first["step"] == 1 and first["loss"] == 2.5 and first["tokens"] == 128 and "time" in first
    sink.log(2, loss=float("nan"), grad_norm=float("inf"))
    sink.close()
    assert read_metrics(path)[2]["loss"] is None and read_metrics(path)[2]["grad_norm"] is None


def test_later_records_of_a_step_win(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsSink(path) as sink:
        sink.log(1, loss=3.0)
        sink.log(2, loss=2.0, val_loss=2.2)
    with MetricsSink(path) as sink:  # a resumed run re-logs step 2
        sink.log(2, loss=1.9)
        sink.log(3, loss=1.5)
    records = read_metrics(path)
    assert list(records) == [1, 2, 3]
    assert records[2]["loss"] == 1.9 and records[2]["val_loss"] == 2.2


def test_a_torn_last_line_is_skipped_and_closed(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "lo')
    with MetricsSink(path) as sink:
        sink.log(2, loss=2.0)
    assert {s: r["loss"] for s, r in read_metrics(path).items()} == {1: 3.0, 2: 2.0}


def test_backends_get_every_record_and_disabled_sinks_write_nothing(tmp_path):
    class Backend:
        def __init__(self):
            self.rows, self.closed = [], False

        def write(self, step, values):
            self.rows.append((step, values["loss"]))

        def close(self):
            self.closed = True

    backend = Backend()
    with MetricsSink(tmp_path / "m.jsonl", backends=[backend]) as sink:
        sink.log(5, loss=1.0)
    assert backend.rows == [(5, 1.0)] and backend.closed
    MetricsSink(tmp_path / "off.jsonl", enabled=False).log(1, loss=1.0)
    assert not (tmp_path / "off.jsonl").exists()
    assert read_metrics(tmp_path / "missing.jsonl") == {}
