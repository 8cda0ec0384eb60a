"""`RUN/report.html`: PNG curves (matplotlib, Agg) and a summary table for a run, readable offline.

Written after the run's manifest, so it is a view on the run rather than part of it: `megalang report RUN`
can rewrite it at any time without breaking `megalang verify RUN`.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.monitor.metrics import read_metrics
from megalang.store.files import fsync_dir, write_text_atomic
from megalang.store.run_dir import RunDir

# (file stem, title, y label, [(record key, legend, scale)], log-scale y)
PLOTS: list[tuple[str, str, str, list[tuple[str, str, float]], bool]] = [
    ("loss", "Loss", "cross-entropy (nats/token)", [("loss", "train", 1.0), ("val_loss", "val", 1.0)], False),
    ("lr", "Learning rate", "lr", [("lr", "lr", 1.0)], False),
    ("grad_norm", "Gradient norm (before clipping)", "L2 norm", [("grad_norm", "grad norm", 1.0)], True),
    ("tokens_per_s", "Throughput", "tokens / s", [("tokens_per_s", "tokens/s", 1.0)], False),
    ("mfu", "Model FLOPs utilisation", "MFU (%)", [("mfu", "MFU", 100.0)], False),
    ("memory", "Memory", "GiB", [("peak_memory_bytes", "peak (device / RSS)", 1 / 2**30),
                                 ("rss_bytes", "process RSS", 1 / 2**30),
                                 ("state_bytes", "params + grads + optimizer", 1 / 2**30),
                                 ("gpu_memory_bytes", "GPU used (NVML)", 1 / 2**30)], False),
]


def write_report(run_dir: str | os.PathLike) -> Path:
    """Render the plots and `report.html` for the run in `run_dir`; return the HTML path."""
    run = RunDir(Path(run_dir))
    records = read_metrics(run.metrics)
    if not records:
        raise UserError(f"{run.root}: no {run.metrics.name} with logged steps; pass a run folder written by "
                        "`megalang train`")
    summary = _read_json(run.summary)
    plots = render_plots(records, run)
    write_text_atomic(run.report, render_html(run, records, summary, plots))
    return run.report


def clear_report(run_dir: str | os.PathLike) -> None:
    """Remove the report (before the run's manifest is written, so the manifest never lists it)."""
    run = RunDir(Path(run_dir))
    run.report.unlink(missing_ok=True)
    shutil.rmtree(run.report_plots, ignore_errors=True)


def render_plots(records: dict[int, dict[str, Any]], run: RunDir) -> list[tuple[str, str]]:
    """PNG per metric family with data, into a fresh folder swapped in whole (no half-old set of images)."""
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit: works on servers and in CI
    import matplotlib.pyplot as plt

    final = run.report_plots
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    made = []
    for stem, title, ylabel, series, log_y in PLOTS:
        lines = [(label, *_series(records, key, scale)) for key, label, scale in series]
        lines = [line for line in lines if line[1]]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        for label, steps, values in lines:
            ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        if log_y and all(v > 0 for _, _, vs in lines for v in vs):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend()
        fig.tight_layout()
        fig.savefig(tmp / f"{stem}.png")
        plt.close(fig)
        made.append((stem, title))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(run.root)
    return made


def _series(records: dict[int, dict[str, Any]], key: str, scale: float) -> tuple[list[int], list[float]]:
    pairs = [(step, r[key] * scale) for step, r in records.items() if isinstance(r.get(key), (int, float))]
    return [s for s, _ in pairs], [v for _, v in pairs]


def summary_rows(records: dict[int, dict[str, Any]], summary: dict[str, Any]) -> list[tuple[str, str]]:
    """What an operator checks first, from summary.json where the run finished, else from the metrics."""
    last = records[max(records)]
    peak = max((r.get("peak_memory_bytes") or 0 for r in records.values()), default=0)
    vals = [r["val_loss"] for r in records.values() if r.get("val_loss") is not None]
    rows = [
        ("steps", f"{summary.get('steps', max(records)):,}"),
        ("tokens seen", f"{summary.get('tokens_seen', last.get('tokens') or 0):,}"),
        ("train loss (first → last)", _fmt_pair(summary.get("train_loss_first"), summary.get("train_loss_last") or last.get("loss"))),
        ("val loss", _fmt(summary.get("val_loss") or (vals[-1] if vals else None))),
        ("tokens / s (steady)", _fmt(summary.get("tokens_per_s") or last.get("tokens_per_s"), ",.0f")),
        ("MFU", _fmt(summary.get("mfu") or last.get("mfu"), ".2%")),
        ("peak memory", f"{peak / 2**30:.2f} GiB" if peak else "n/a"),
        ("parameters", _fmt(summary.get("total_params"), ",")),
        ("device / precision", f"{summary.get('device', 'n/a')} / {summary.get('precision', 'n/a')}"),
        ("wall time", _fmt(summary.get("wall_seconds"), ",.1f") + (" s" if summary.get("wall_seconds") else "")),
        ("status", "finished" if summary else "in progress or stopped (no summary.json)"),
    ]
    if summary.get("resumed_from_step") is not None:
        rows.append(("resumed from step", str(summary["resumed_from_step"])))
    return rows


def privacy_rows(privacy: dict[str, Any]) -> list[tuple[str, str]]:
    """ε beside what `megalang eval privacy` measured (RUN/privacy.json), so the bound and the attacks read together."""
    if not privacy:
        return []
    eps = privacy.get("epsilon")
    controls = privacy.get("control_exposure_mean")
    auc = privacy.get("mia_auc")
    return [
        ("privacy: ε (δ)", f"{eps} (δ = {privacy.get('delta')})" if eps is not None else "no DP (ε = ∞)"),
        ("privacy: canary exposure, mean (controls)",
         f"{_fmt(privacy.get('exposure_mean'), '.2f')} bits ({_fmt(controls, '.2f')}); at most "
         f"{_fmt(privacy.get('max_exposure'), '.1f')}, {privacy.get('repeats')} repeats"),
        ("privacy: membership inference AUC (TPR at 1% FPR)",
         f"{_fmt(auc, '.3f')} ({_fmt(privacy.get('mia_tpr_at_1pct_fpr'), '.3f')})" if auc is not None
         else privacy.get("mia_note", "n/a")),
    ]


def render_html(run: RunDir, records: dict[int, dict[str, Any]], summary: dict[str, Any],
                plots: list[tuple[str, str]]) -> str:
    """One static page: inline CSS, relative image paths, nothing fetched from the network."""
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                     for k, v in summary_rows(records, summary) + privacy_rows(_read_json(run.privacy)))
    figures = "\n".join(
        f'<figure><img src="{run.relative(run.report_plots)}/{stem}.png" alt="{html.escape(title)}" width="640" height="360"></figure>'
        for stem, title in plots)
    name = html.escape(run.root.resolve().name)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>megalang run {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }}
th {{ background: #f4f4f4; font-weight: 600; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
</style></head>
<body>
<h1>Run {name}</h1>
<p>{len(records):,} logged steps from <code>{run.relative(run.metrics)}</code>.</p>
<table id="summary">
{rows}
</table>
<div id="plots">
{figures}
</div>
</body></html>
"""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _fmt_pair(a: Any, b: Any) -> str:
    return f"{_fmt(a)} → {_fmt(b)}"
