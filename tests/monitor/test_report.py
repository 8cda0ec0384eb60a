"""monitor/report.py: report.html and its PNG plots after every train and from `megalang report RUN`,
rendered by a real headless Chromium that must load every image."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys

import pytest

from megalang.cli.artifacts import verify
from megalang.errors import UserError
from megalang.monitor.metrics import MetricsSink
from megalang.monitor.report import write_report

PLOTS_DIR, REPORT = "report_files", "report.html"  # the names a user opens

PLOTS = {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "memory"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# Appended to a copy of the page: once everything has loaded, list every image's natural width.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify([...document.images].map(i => [i.getAttribute("src"), i.naturalWidth]));
  document.body.appendChild(out);
});
</script>"""


def test_train_writes_the_report_with_every_plot_and_keeps_the_run_verifiable(finished_run):
    page = (finished_run / REPORT).read_text()
    assert {p.stem for p in (finished_run / PLOTS_DIR).glob("*.png")} == PLOTS
    for stem in PLOTS:
        assert f'src="{PLOTS_DIR}/{stem}.png"' in page
        assert (finished_run / PLOTS_DIR / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((finished_run / "summary.json").read_text())
    assert f"<th>steps</th><td>{summary['steps']}</td>" in page
    assert f"{summary['train_loss_last']:.4f}" in page and "finished" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch: works offline
    assert verify(finished_run) == []  # the report sits outside the manifest


def test_report_command_rebuilds_it_without_breaking_verify(finished_run, tmp_path):
    (finished_run / REPORT).unlink()
    result = subprocess.run([sys.executable, "-m", "megalang", "report", str(finished_run)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (finished_run / REPORT).is_file() and verify(finished_run) == []
    missing = subprocess.run([sys.executable, "-m", "megalang", "report", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "metrics.jsonl" in missing.stderr


def test_report_of_a_run_still_going(tmp_path):
    with MetricsSink(tmp_path / "metrics.jsonl") as sink:
        for step in range(1, 4):
            sink.log(step, loss=3.0 / step, lr=1e-3, tokens=step * 128, tokens_per_s=1000.0)
    page = write_report(tmp_path).read_text()
    assert "in progress" in page
    assert {p.stem for p in (tmp_path / PLOTS_DIR).glob("*.png")} == {"loss", "lr", "tokens_per_s"}
    with pytest.raises(UserError, match="no metrics.jsonl"):
        write_report(tmp_path / "empty")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary; `make install` installs the Debian package")
def test_report_renders_in_headless_chromium_with_every_image_loaded(finished_run):
    probe = finished_run / "probe.html"
    page = (finished_run / REPORT).read_text()
    # A deliberately missing image shows that the probe can tell a broken image from a loaded one.
    page = page.replace("</body>", f'<img src="{PLOTS_DIR}/missing.png">{PROBE}</body>')
    probe.write_text(page)
    try:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=180)
    finally:
        probe.unlink()
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert match, f"chromium printed no probe (exit {result.returncode}): {result.stderr[-2000:]}"
    widths = dict(json.loads(html.unescape(match.group(1))))
    assert widths.pop(f"{PLOTS_DIR}/missing.png") == 0
    assert set(widths) == {f"{PLOTS_DIR}/{stem}.png" for stem in PLOTS}
    assert all(width == 640 for width in widths.values()), widths  # 6.4 in × 100 dpi, decoded by the browser
