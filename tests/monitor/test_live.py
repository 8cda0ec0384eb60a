"""The sink's backends during real runs: a Prometheus endpoint scraped while `megalang train` runs, and
TensorBoard event files read back with TensorBoard's own reader."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from megalang.errors import UserError
from megalang.monitor.prometheus import PrometheusBackend

TRAINING = ["megalang_loss", "megalang_lr", "megalang_grad_norm", "megalang_tokens_per_second",
            "megalang_tokens_seen", "megalang_mfu", "megalang_step_time_seconds", "megalang_data_wait_seconds",
            "megalang_peak_memory_bytes", "megalang_cpu_utilization_percent", "megalang_rss_bytes"]


def parse(text: str) -> dict[str, float]:
    """name → value for the unlabelled samples of a Prometheus text exposition."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return parse(response.read().decode())


def stderr_lines(proc: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_prometheus_endpoint_is_scraped_during_a_short_run(shards_2k, tmp_path):
    run = tmp_path / "run"
    args = ["model.preset=debug", f"data.shards={shards_2k}", f"run.dir={run}", "train.device=cpu",
            "train.seq_len=32", "train.micro_batch_size=4", "train.max_steps=100000", "train.log_every=1",
            "schedule.warmup_steps=2", "train.progress=false", "train.eval_batches=2", "checkpoint.every=5",
            "checkpoint.keep=1", "metrics.port=0", "metrics.report=false"]
    proc = subprocess.Popen([sys.executable, "-m", "megalang", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines, url, seen = stderr_lines(proc), None, []
        while url is None:
            line = lines.get(timeout=300)
            assert line is not None, f"training exited ({proc.wait()}) without serving metrics: {''.join(seen)}"
            seen.append(line)
            match = re.search(r"prometheus: serving (http://\S+/metrics)", line)
            url = match.group(1) if match else None
        assert url.startswith("http://127.0.0.1:")  # loopback unless metrics.host says otherwise
        during, deadline = [], time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            values = scrape(url)
            if values.get("megalang_step", 0) >= 1:
                during.append(values)
            if during and values.get("megalang_checkpoint_seconds", 0) > 0:
                break
            time.sleep(0.05)
        assert during, "no scrape saw a logged step while the run was going"
        first, last = during[0], during[-1]
        assert all(name in first for name in TRAINING)
        assert first["megalang_loss"] > 0 and first["megalang_tokens_seen"] == first["megalang_step"] * 4 * 32
        assert first["megalang_peak_memory_bytes"] > 0 and first["megalang_rss_bytes"] > 0
        assert last["megalang_step"] >= 6 and last["megalang_checkpoint_seconds"] > 0
        assert proc.poll() is None  # all of this happened while training
    finally:
        proc.send_signal(signal.SIGINT)  # a long run, stopped once seen: the test does not wait for it
        proc.wait(timeout=120)
    assert proc.returncode == 130  # the CLI's exit code for an interrupted command


def test_a_taken_port_is_a_user_error():
    first = PrometheusBackend(0)
    try:
        with pytest.raises(UserError, match=f"metrics.port={first.port}"):
            PrometheusBackend(first.port)
    finally:
        first.close()


def test_tensorboard_event_files_hold_the_logged_scalars(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(finished_run / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "val_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == list(range(1, 9))
    assert [e.step for e in events.Scalars("val_loss")] == [4, 8]
