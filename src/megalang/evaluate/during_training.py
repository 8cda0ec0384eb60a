"""Eval sets scored while a run trains (recipe key `evals:`); the trainer logs what this returns.

Every rank runs the same evaluation: a sharded (FSDP/TP) model can only run forward collectively, and the
sets are small. Eval sets are read once per process; results are `eval/NAME/METRIC` keys in metrics.jsonl.
"""

from __future__ import annotations

import functools
from pathlib import Path

from megalang.config import EvalSetConfig


def due_evals(evals: list[EvalSetConfig], step: int, max_steps: int) -> list[EvalSetConfig]:
    """The `evals:` sets due at `step`: every N steps, and always at the last step."""
    return [s for s in evals if step == max_steps or (s.every and step % s.every == 0)]


def run_evals(due: list[EvalSetConfig], model, run_dir: Path, seq_len: int, autocast) -> dict[str, float]:
    """Score `due` with the model being trained (`autocast`: the run's precision context), as flat
    `eval/NAME/METRIC` metrics; the model is back in train mode afterwards."""
    model = getattr(model, "module", model)  # DDP wraps; FSDP2/TP do not
    scorer = _scorer(model, run_dir, seq_len)
    metrics: dict[str, float] = {}
    try:
        with autocast:
            for s in due:
                name = s.name or Path(s.data).stem
                scorer.batch_size = s.batch_size
                metrics.update({f"eval/{name}/{k}": v for k, v in run_eval_set(scorer, s).items()})
    finally:
        model.train()
    return metrics


def run_eval_set(scorer, s: EvalSetConfig) -> dict[str, float]:
    """Headline numbers of one set (what `megalang eval <kind>` reports, without per-item detail)."""
    if s.kind == "choice":
        from megalang.evaluate.choice import aggregate, score_items

        rows = score_items(scorer, _choice_items(s.data, s.limit), s.format)
        return {k: v for k, v in aggregate(rows).items() if k != "n"}
    if s.kind == "classify":
        from megalang.evaluate.classify import score_records, summarize

        records, mapping = _classify_set(s.data, s.verbalizer, s.limit)
        summary = summarize(score_records(scorer, records, mapping, s.template), list(mapping))
        return {"accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"]}
    from megalang.evaluate.perplexity import read_documents, rolling_perplexity

    texts = read_documents(s.data)[: s.limit or None]
    result = rolling_perplexity(scorer, texts, window=scorer.max_length)
    return {k: result[k] for k in ("token_perplexity", "word_perplexity", "bits_per_byte")}


def _scorer(model, run_dir: Path, seq_len: int):
    from megalang.evaluate.scoring import Scorer

    return Scorer(model, _tokenizer(str(run_dir)), max_length=seq_len)


@functools.lru_cache(maxsize=4)
def _tokenizer(run_dir: str):
    from megalang.data.tokenizer import load_hf_tokenizer
    from megalang.store.run_dir import RunDir

    return load_hf_tokenizer(RunDir(Path(run_dir)).tokenizer)


@functools.lru_cache(maxsize=16)
def _choice_items(path: str, limit: int | None):
    from megalang.evaluate.choice import load_items

    return load_items(path, limit)


@functools.lru_cache(maxsize=16)
def _classify_set(path: str, verbalizer: str | None, limit: int | None):
    from megalang.evaluate.classify import check_labels, parse_verbalizer
    from megalang.evaluate.common import CLASSIFY, read_jsonl

    records = read_jsonl(path, CLASSIFY)[: limit or None]
    mapping = parse_verbalizer(verbalizer, sorted({str(r["label"]) for r in records}) if not verbalizer else None)
    check_labels(records, mapping, path)
    return records, mapping
