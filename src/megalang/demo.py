"""`megalang demo`: every stage on a real corpus every machine has, the Python standard library's source.

A fixed set of modules is held out for validation, so val perplexity measures generalisation to unseen code.
Re-running reuses the completed stages of an earlier run in the same folder and resumes training.
"""

from __future__ import annotations

import sysconfig
import time
from pathlib import Path
from typing import Any

from megalang.config import (
    PrepareConfig,
    RunConfig,
    TokenizeConfig,
    TokenizerTrainConfig,
    build_config,
    deep_merge,
    load_yaml,
)
from megalang.store.files import write_json_atomic
from megalang.store.manifest import MANIFEST

# Held-out modules: ordinary library code of several styles, none imported by the rest in bulk.
VAL_MODULES = ["*/json/*", "*/csv.py", "*/textwrap.py", "*/heapq.py", "*/fractions.py", "*/statistics.py", "*/shlex.py"]
# Vendored third-party code, generated tables and huge test suites are not what the demo is about.
EXCLUDE = ["*/site-packages/*", "*/test/*", "*/tests/*", "*/idlelib/*", "*/lib2to3/*", "*/__pycache__/*"]
DEMO_RECIPE = Path(__file__).parent / "recipes" / "demo.yaml"
PROMPT = "import os\n\n\ndef "
# Val windows of 256 tokens scored for the perplexity before and after training (40 x 8 x 256 = 82k tokens max).
EVAL_BATCHES = 40


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def demo(out: str | Path = "runs/demo", max_steps: int | None = None, preset: str = "tiny", console=None,
         corpus: str | Path | None = None, vocab_size: int = 8192) -> dict[str, Any]:
    """Every stage, then the summary (also written to OUT/summary.json). `corpus` (default: the standard library's
    source; it must hold some of VAL_MODULES) and `vocab_size` let a test run the same driver on a few files."""
    from megalang.data.pipeline import prepare
    from megalang.data.tokenize import tokenize
    from megalang.data.tokenizer import train_tokenizer
    from megalang.evaluate.perplexity import perplexity
    from megalang.export import export
    from megalang.generate import generate
    from megalang.monitor.flops import native_bf16
    from megalang.train.trainer import train

    out = Path(out)
    say = (lambda msg: console.print(msg, markup=False)) if console is not None else print
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, folder: Path, fn, cfg) -> None:
        if (folder / MANIFEST).is_file():
            say(f"[{name}] reusing {folder}")
            return
        t = time.perf_counter()
        fn(cfg)
        timings[name] = round(time.perf_counter() - t, 1)
        say(f"[{name}] {folder} ({timings[name]} s)")

    out.mkdir(parents=True, exist_ok=True)
    data, tok, shards, run, export_dir = (out / n for n in ("data", "tokenizer", "shards", "run", "export"))
    source = str(corpus if corpus is not None else stdlib_dir())
    # The default chain, as a user gets it: on the stdlib (code kind) it keeps 567 of the 604 modules the minimal
    # normalize/length/exact_dedup chain kept (near-dedup drops 36 generated codec tables under encodings/ and one
    # shim) and scrubs authors' emails; every VAL_MODULES file stays (docs/data.md, "The default chain per kind").
    stage("prepare", data, prepare, PrepareConfig(inputs=[source], out=str(data), exclude=EXCLUDE))
    stage("tokenizer", tok, train_tokenizer, TokenizerTrainConfig(input=str(data), out=str(tok), vocab_size=vocab_size))
    stage("tokenize", shards, tokenize, TokenizeConfig(input=str(data), tokenizer=str(tok), out=str(shards), val_fraction=0, val_sources=VAL_MODULES))

    recipe = load_yaml(DEMO_RECIPE)
    overrides: dict[str, Any] = {"model": {"preset": preset}, "data": {"shards": str(shards)}, "run": {"dir": str(run)},
                                 "train": {}}
    if max_steps is not None:
        overrides["train"]["max_steps"] = max_steps
        overrides["schedule"] = {"warmup_steps": min(recipe["schedule"]["warmup_steps"], max_steps)}
    if recipe["train"].get("precision") == "bf16" and not native_bf16():
        say("[train] this CPU has no native bf16 matmul; training in fp32")
        overrides["train"]["precision"] = "fp32"
    cfg = build_config(RunConfig, deep_merge(recipe, overrides), f"{DEMO_RECIPE} + demo arguments")

    eval_batches = EVAL_BATCHES
    untrained = untrained_perplexity(cfg, shards, eval_batches)
    t = time.perf_counter()
    summary = train(cfg)
    timings["train"] = round(time.perf_counter() - t, 1)
    trained = perplexity(str(run), str(shards), max_batches=eval_batches, out=str(out / "eval-perplexity.json"))
    export(run, export_dir, overwrite=True)
    sample = generate(export_dir, PROMPT, max_new_tokens=96, temperature=0.7, seed=cfg.seed)

    result = {
        **{k: summary[k] for k in ("train_loss_first", "train_loss_last", "val_loss", "tokens_seen", "steps",
                                  "trainable_params", "total_params", "wall_seconds", "tokens_per_s", "mfu")},
        "val_perplexity": trained["perplexity"],
        "val_perplexity_untrained": untrained,
        "val_tokens_scored": trained["tokens"],
        "export_dir": str(export_dir),
        "sample": sample,
        "stage_seconds": timings,
        "demo_wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "summary.json", result)
    print_summary(say, result)
    return result


def untrained_perplexity(cfg: RunConfig, shards: Path, max_batches: int | None) -> float:
    """Val perplexity of the model training starts from (same preset, same seed)."""
    from megalang.data.shards import open_split, read_shard_manifest
    from megalang.evaluate.perplexity import evaluate_perplexity
    from megalang.model.build import build_model, special_ids

    manifest = read_shard_manifest(shards)
    model = build_model(cfg.model, manifest["vocab_size"], cfg.train.seq_len, special_ids(manifest), cfg.seed)
    split = open_split(shards, "val", manifest)
    return evaluate_perplexity(model, split, cfg.train.seq_len, 8, max_batches)["perplexity"]


def print_summary(say, r: dict[str, Any]) -> None:
    say("")
    mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"  # None: no known peak, or one measured too low
    say(f"tokens seen        {r['tokens_seen']:,} in {r['steps']} steps ({r['tokens_per_s']:,.0f} tokens/s, MFU {mfu})")
    say(f"train loss         {r['train_loss_first']:.3f} → {r['train_loss_last']:.3f}")
    say(f"val perplexity     {r['val_perplexity_untrained']:,.1f} (untrained) → {r['val_perplexity']:,.2f}")
    say(f"export             {r['export_dir']}")
    say(f"demo wall time     {r['demo_wall_seconds']} s")
    say("sample:")
    say(r["sample"])
