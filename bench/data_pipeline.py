"""megalang `data prepare` vs datatrove on the same corpus: web quality filters + MinHash near-dedup.

Both run FineWeb's filter chain (Gopher repetition → Gopher quality → C4 without the terminal-punctuation rule →
FineWeb) and MinHash over word 5-grams with 14 bands × 8 rows, on one worker each (same CPU budget). Prints one
JSON line: MB/s of each, the ratio, and how far the decisions agree.

The corpus is real prose that ships with Python (language reference topics, long stdlib docstrings) plus, for
each document, a near copy (2% of words replaced) and a re-ordered copy (paragraphs shuffled).

    .venv/bin/python bench/data_pipeline.py [--copies 2] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))


def make_corpus(root: Path, copies: int, seed: int = 0) -> tuple[Path, int, dict[str, int]]:
    """The corpus file, its size, and text → family (a document and its copies form one family)."""
    from test_quality_parity_datatrove import prose_corpus

    rng = random.Random(seed)
    base = prose_corpus(every=1)
    docs, family = [], {}
    for fam, text in enumerate(base):
        start = len(docs)
        docs.append(text)
        for _ in range(copies):
            words = text.split(" ")
            for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
                words[i] = rng.choice(["alpha", "beta", "gamma", "delta"])
            docs.append(" ".join(words))
        paragraphs = text.split("\n\n")
        rng.shuffle(paragraphs)
        docs.append("\n\n".join(paragraphs))
        family.update((d, fam) for d in docs[start:])
    # Both pipelines output C4-shortened texts; key families by that text too (same rules, see the parity test).
    from megalang.data.quality import KindFilters

    chain = KindFilters.from_config({"web": ["c4"]}, {})
    family.update({chain.apply(d, "web")[0]: fam for d, fam in list(family.items())})
    rng.shuffle(docs)
    path = root / "in" / "corpus.jsonl"
    path.parent.mkdir(parents=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"text": text, "id": str(i)}) + "\n")
    return path, sum(len(d.encode()) for d in docs), family


def run_megalang(corpus: Path, out: Path, workers: int, min_similarity: float) -> tuple[float, set[str]]:
    from megalang.config import PrepareConfig
    from megalang.data.documents import iter_prepared
    from megalang.data.pipeline import prepare

    cfg = PrepareConfig(inputs=[str(corpus)], out=str(out), steps=["quality", "near_dedup"], workers=workers,
                        quality_filters={"web": ["gopher_repetition", "gopher_quality", "c4", "fineweb"]},
                        progress=False, min_chars=0, near_dedup={"min_similarity": min_similarity})
    start = time.perf_counter()
    prepare(cfg)
    seconds = time.perf_counter() - start
    return seconds, {r["text"] for r in iter_prepared(out)}


def run_datatrove(corpus: Path, work: Path, workers: int) -> tuple[float, set[str], int]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    # sha1: datatrove 0.10's xxhash path passes str, which xxhash 4.x rejects ("Strings must be encoded").
    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(64, "sha1"))
    stages = [
        [JsonlReader(str(corpus.parent)), GopherRepetitionFilter(), GopherQualityFilter(),
         C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(),
         JsonlWriter(str(work / "filtered"), compression=None), MinhashDedupSignature(str(work / "sigs"), config=cfg)],
        [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)],
        [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)],
        [JsonlReader(str(work / "filtered")), MinhashDedupFilter(str(work / "remove")),
         JsonlWriter(str(work / "final"), compression=None)],
    ]
    start = time.perf_counter()
    for i, pipeline in enumerate(stages):
        tasks = cfg.num_buckets if i == 1 else 1
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(work / f"logs{i}")).run()
    seconds = time.perf_counter() - start
    after_filters = sum(1 for p in (work / "filtered").glob("*.jsonl") for _ in open(p, encoding="utf-8"))
    kept = {json.loads(line)["text"] for p in (work / "final").glob("*.jsonl") for line in open(p, encoding="utf-8")}
    return seconds, kept, after_filters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=2, help="near copies per document")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--min-similarity", type=float, default=0.65, help="megalang's near_dedup.min_similarity")
    args = ap.parse_args()
    import logging

    from loguru import logger

    logger.remove()  # datatrove logs every step through loguru
    logging.disable(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench-data-"))
    try:
        corpus, nbytes, family = make_corpus(root, args.copies)
        ours_s, ours_kept = run_megalang(corpus, root / "megalang", args.workers, args.min_similarity)
        theirs_s, theirs_kept, theirs_after_filters = run_datatrove(corpus, root / "datatrove", args.workers)
        from megalang.data.documents import read_prepared_manifest

        counts = read_prepared_manifest(root / "megalang")["counts"]
        ours_after_filters = counts["documents_in"] - counts["removed_quality"]
        def duplicates_left(kept: set[str]) -> int:  # kept documents beyond one per family
            return len(kept) - len({family[t] for t in kept if t in family}) - sum(t not in family for t in kept)

        print(json.dumps({
            "bench": "data_pipeline", "corpus_mb": round(nbytes / 1e6, 2), "documents": counts["documents_in"],
            "workers": args.workers, "min_similarity": args.min_similarity,
            "megalang_mb_s": round(nbytes / 1e6 / ours_s, 3), "datatrove_mb_s": round(nbytes / 1e6 / theirs_s, 3),
            "speedup": round(theirs_s / ours_s, 2),
            "kept_after_filters": {"megalang": ours_after_filters, "datatrove": theirs_after_filters},
            "kept_after_dedup": {"megalang": len(ours_kept), "datatrove": len(theirs_kept)},
            "families_kept": {"megalang": len({family.get(t) for t in ours_kept}),
                              "datatrove": len({family.get(t) for t in theirs_kept})},
            "duplicates_left": {"megalang": duplicates_left(ours_kept), "datatrove": duplicates_left(theirs_kept)},
        }))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
