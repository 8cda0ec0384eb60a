"""Per-core rate of each data stage, in one process and on Ray with 1 and 2 workers: the prepare map phase, the
near-dedup corpus phase and tokenization.

The corpus is the Python standard library's own modules (real code, as in the demo) cut into documents of 40 lines,
as JSONL, plus near copies (2% of words replaced) of every 4th and exact copies of every 10th, so near-dedup has
clusters to find. Before timing, each Ray worker imports the stage's modules once (a long job pays that once). The
map phase runs the full chain (normalize, length, quality for code, scrub, MinHash); the corpus phase exact + near
dedup; tokenize a 4096-token BPE trained once on the prepared output. Each configuration runs the stage's own
functions in the order `data prepare` runs them (pipeline.py), timing each phase; one process (`executor=local`,
1 worker; its tokenizer uses every core, as the stage does) and a local Ray of 1 and 2 CPUs (`executor=ray`; one
encoder thread per Ray task). Every configuration's output is checked byte-identical to the one-process output.
Per-core rate = documents (or MB) per second / cores used. Prints one JSON line; `--write FILE` also writes the
rates `megalang plan data --rates FILE` reads (docs/planning.md).

    .venv/bin/python bench/data_stages.py [--megabytes 6] [--repeats 1] [--write rates.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

CHUNK_LINES = 40  # one document per 40 lines of a module: ~1.3 KB, about a web page's worth of text
STEPS = ["normalize", "length", "quality", "scrub", "exact_dedup", "near_dedup"]


def make_corpus(root: Path, megabytes: float, seed: int = 0) -> Path:
    """JSONL files of ~1 MB: stdlib modules in sorted order, with near and exact copies mixed in."""
    from megalang.data.sources import matches_any
    from megalang.demo import EXCLUDE, stdlib_dir

    rng = random.Random(seed)
    texts, size = [], 0
    for path in sorted(stdlib_dir().rglob("*.py")):
        if matches_any(str(path), EXCLUDE):
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except (UnicodeDecodeError, OSError):
            continue
        for start in range(0, len(lines), CHUNK_LINES):
            text = "".join(lines[start : start + CHUNK_LINES])
            if len(text.split()) < 50:
                continue
            texts.append(text)
            size += len(text.encode())
            if len(texts) % 4 == 0:
                words = text.split(" ")
                for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
                    words[i] = rng.choice(["alpha", "beta", "gamma"])
                texts.append(" ".join(words))
            if len(texts) % 10 == 0:
                texts.append(text)
        if size >= megabytes * 1e6:
            break
    rng.shuffle(texts)
    folder = root / "corpus"
    folder.mkdir()
    per_file = max(1, len(texts) * 1_000_000 // max(size, 1))
    for k in range(0, len(texts), per_file):
        with open(folder / f"part-{k // per_file:04d}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts[k : k + per_file])
    return folder


def prepare_phases(corpus: Path, out: Path, executor: str, workers: int) -> dict:
    """`prepare`'s body with a clock around the map phase and the corpus phase; returns seconds and sizes."""
    from megalang.config import PrepareConfig
    from megalang.data.documents import DocWriter
    from megalang.data.executors import executor_session, run_tasks
    from megalang.data.pipeline import MergedResults, corpus_dedup, map_task, plan_tasks, write_survivors
    from megalang.data.readers import find_input_files

    cfg = PrepareConfig(inputs=[str(corpus)], out=str(out), steps=STEPS, kind="code", task_bytes=1 << 20,
                        progress=False, workers=workers, executor=executor)
    tasks = plan_tasks(find_input_files(cfg.inputs, cfg.exclude).files, cfg.task_bytes)
    out.mkdir(parents=True)
    parts = out / "_parts"
    parts.mkdir()
    with executor_session(executor, workers):
        if executor == "ray":
            list(run_tasks(warm_up, range(workers), executor, workers, False, phase="warm_up"))
        start = time.perf_counter()
        results = list(run_tasks(functools.partial(map_task, cfg=cfg, parts=str(parts)), tasks, executor, workers,
                                 False))
        mapped = time.perf_counter()
        merged = MergedResults(cfg, results)
        survivors = corpus_dedup(cfg, merged, parts, workers)
        deduped = time.perf_counter()
    writer = DocWriter(out, cfg.docs_per_file)
    write_survivors(parts, results, survivors, writer, merged)
    writer.close()
    shutil.rmtree(parts)
    return {
        "map_seconds": mapped - start, "map_documents": merged.documents_in, "map_bytes": merged.bytes_in,
        "dedup_seconds": deduped - mapped, "dedup_documents": len(survivors.keep),
        "dedup_bytes": sum(n for r in results for n in r.nbytes),
        "removed_near": merged.stats["near_dedup"].documents_removed,
        "removed_exact": merged.stats["exact_dedup"].documents_removed,
        "kept": writer.documents,
    }


def warm_up(_: int) -> None:
    """Import what the stages' tasks import, then hold the worker a moment so each worker gets one of these."""
    import importlib

    for module in ("megalang.data.pipeline", "megalang.data.dedup_partitioned", "megalang.data.tokenize_tasks"):
        importlib.import_module(module)

    time.sleep(1)


def tokenize_phase(prepared: Path, tok: Path, out: Path, executor: str, workers: int) -> dict:
    from megalang.config import TokenizeConfig
    from megalang.data.executors import executor_session, run_tasks
    from megalang.data.tokenize import tokenize

    cfg = TokenizeConfig(input=str(prepared), tokenizer=str(tok), out=str(out), val_fraction=0.01,
                         tokens_per_shard=1 << 20, task_docs=1024, executor=executor, workers=workers)
    with executor_session(executor, workers):
        if executor == "ray":
            list(run_tasks(warm_up, range(workers), executor, workers, False, phase="warm_up"))
        start = time.perf_counter()
        manifest = tokenize(cfg)
        seconds = time.perf_counter() - start
    return {"tokenize_seconds": seconds, "tokens": manifest["counts"]["tokens"], "files": manifest["files"]}


def dedup_at_scale(root: Path, documents: int, executor: str, workers: int, seed: int = 0) -> dict:
    """The near-dedup corpus phase alone on `documents` synthetic signatures (10k per part file; every 5th a near
    copy of an earlier one with 10% of its values changed): the corpus phase's cost grows with documents, and the
    text corpus above is too small to show it. Returns seconds and the removed count."""
    import numpy as np

    from megalang.data.dedup import MinHashParams, Signatures, near_duplicate_mask
    from megalang.data.dedup_partitioned import near_duplicates_partitioned
    from megalang.data.executors import executor_session, run_tasks

    params = MinHashParams()
    folder = root / f"sigs-{documents}"
    if not folder.exists():
        folder.mkdir()
        rng = np.random.default_rng(seed)
        sigs = rng.integers(0, 2**32, size=(documents, params.num_perm), dtype=np.uint32)
        copies = np.arange(5, documents, 5)
        sigs[copies] = sigs[rng.integers(0, copies)]
        change = rng.random((len(copies), params.num_perm)) < 0.1
        sigs[copies] = np.where(change, rng.integers(0, 2**32, size=change.shape, dtype=np.uint32), sigs[copies])
        for k in range(0, documents, 10_000):
            np.save(folder / f"part-{k // 10_000:06d}.sig.npy", sigs[k : k + 10_000])
    files = sorted(str(p) for p in folder.glob("*.sig.npy"))
    valid = np.ones(documents, bool)
    with executor_session(executor, workers):
        if executor == "ray":
            list(run_tasks(warm_up, range(workers), executor, workers, False, phase="warm_up"))
        start = time.perf_counter()
        if executor == "ray":
            def run(fn, tasks, phase):
                return run_tasks(fn, tasks, executor, workers, False, phase=phase)

            removed, _ = near_duplicates_partitioned(files, valid, params, root / "spill", run, workers)
        else:
            removed, _ = near_duplicate_mask(Signatures([np.load(f, mmap_mode="r") for f in files], valid), params)
        seconds = time.perf_counter() - start
    shutil.rmtree(root / "spill", ignore_errors=True)
    return {"seconds": seconds, "removed": int(removed.sum())}


def write_prepared_manifest(out: Path) -> None:
    """The bench writes docs the stage's way but skips its manifest; tokenize reads one."""
    from megalang.data.documents import STAGE
    from megalang.store.manifest import write_manifest

    write_manifest(out, STAGE, config={}, inputs=[], counts={})


def rates(seconds: float, documents: int, nbytes: int, cores: int) -> dict:
    out = {"seconds": round(seconds, 3), "docs_per_s_per_core": round(documents / seconds / cores, 1)}
    if nbytes:
        out["mb_per_s_per_core"] = round(nbytes / 1e6 / seconds / cores, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megabytes", type=float, default=6.0, help="corpus size before copies are counted")
    ap.add_argument("--dedup-documents", type=int, default=200_000, help="synthetic signatures for near_dedup_at_scale")
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration; the fastest of each phase is kept")
    ap.add_argument("--write", help="also write the rates `megalang plan data --rates FILE` reads to FILE")
    args = ap.parse_args()

    from megalang.config import TokenizerTrainConfig
    from megalang.data.documents import iter_prepared
    from megalang.data.tokenizer import train_tokenizer

    root = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    try:
        corpus = make_corpus(root, args.megabytes)
        configs = [("local", 1), ("ray", 1), ("ray", 2)]
        results, reference, tok, reference_removed = {}, None, root / "tok", {}
        for executor, workers in configs * args.repeats:
            name = f"{executor}-{workers}"
            out = root / f"{name}-{time.monotonic_ns()}"
            prep = prepare_phases(corpus, out / "prepared", executor, workers)
            write_prepared_manifest(out / "prepared")
            texts = [r["text"] for r in iter_prepared(out / "prepared")]
            if not tok.exists():
                start = time.perf_counter()
                train_tokenizer(TokenizerTrainConfig(input=str(out / "prepared"), out=str(tok), vocab_size=4096,
                                                     max_sentences=50_000))
                tokenizer = {"seconds": round(time.perf_counter() - start, 3),
                             "sample_mb": round(sum(len(t.encode()) for t in texts) / 1e6, 3)}
            tokd = tokenize_phase(out / "prepared", tok, out / "shards", executor, workers)
            shard_files = {k: v for k, v in tokd.pop("files").items()}
            same = (texts, shard_files)
            if reference is None:
                reference = same
            assert same == reference, f"{name}: output differs from the one-process output"
            prepared_bytes = sum(len(t.encode()) for t in texts)
            cores = workers if executor == "ray" else 1
            tok_cores = workers if executor == "ray" else os.cpu_count() or 1
            scale = dedup_at_scale(root, args.dedup_documents, executor, workers)
            assert scale["removed"] == reference_removed.setdefault("n", scale["removed"])
            row = {
                "cores": cores,
                "near_dedup_at_scale": {**rates(scale["seconds"], args.dedup_documents, 0, cores),
                                        "removed": scale["removed"]},
                "prepare_map": rates(prep["map_seconds"], prep["map_documents"], prep["map_bytes"], cores),
                "near_dedup": rates(prep["dedup_seconds"], prep["dedup_documents"], prep["dedup_bytes"], cores),
                "tokenize": {**rates(tokd["tokenize_seconds"], len(texts), prepared_bytes, tok_cores),
                             "cores": tok_cores},
            }
            best = results.setdefault(name, row)
            for phase in ("prepare_map", "near_dedup", "near_dedup_at_scale", "tokenize"):
                if row[phase]["seconds"] < best[phase]["seconds"]:
                    best[phase] = row[phase]
            shutil.rmtree(out)
        line = {
            "bench": "data_stages", "cpus": os.cpu_count(), "corpus_mb": round(prep["map_bytes"] / 1e6, 2),
            "documents": prep["map_documents"], "removed_exact": prep["removed_exact"],
            "removed_near": prep["removed_near"], "kept": prep["kept"], "tokens": tokd["tokens"],
            "tokenizer": tokenizer, "identical_output": True, **results,
        }
        print(json.dumps(line))
        if args.write:
            write_plan_rates(Path(args.write), line, prepared_bytes / tokd["tokens"],
                             prep["map_bytes"] / prep["map_documents"], sys.argv[1:])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_plan_rates(path: Path, line: dict, bytes_per_token: float, doc_bytes: float, argv: list[str]) -> None:
    """The rates file `megalang plan data` reads (plan_data.py): per stage, MB of its input per second per core on
    one Ray worker, and the throughput of 2 workers over 1. The near-dedup corpus phase is measured in documents
    (its cost follows the document count, not the bytes); it is converted at this corpus's mean document size."""
    one, two = line["ray-1"], line["ray-2"]

    def stage(name: str, mb: float, mb2: float) -> dict:
        return {"mb_per_core_s": round(mb, 4), "speedup_2_workers": round(2 * mb2 / mb, 3), "measured_as": name}

    def near(row: dict) -> float:
        return row["near_dedup_at_scale"]["docs_per_s_per_core"] * doc_bytes / 1e6

    rates = {
        "command": "python bench/data_stages.py " + " ".join(argv),
        "measured": f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} cpus, load average "
                    f"{os.getloadavg()[0]:.1f} at the end",
        "bytes_per_token": round(bytes_per_token, 4),
        "stages": {
            "prepare": stage("prepare_map", one["prepare_map"]["mb_per_s_per_core"],
                             two["prepare_map"]["mb_per_s_per_core"]),
            "near_dedup": stage(f"near_dedup_at_scale × {doc_bytes:.0f} bytes per document", near(one), near(two)),
            "tokenizer": line["tokenizer"],
            "tokenize": stage("tokenize", one["tokenize"]["mb_per_s_per_core"], two["tokenize"]["mb_per_s_per_core"]),
        },
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rates, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
