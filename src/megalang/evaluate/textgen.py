"""`megalang eval generate`: generate from prompts and score against references with BLEU and chrF
(sacrebleu), ROUGE-1/2/L (rouge-score) and exact match."""

from __future__ import annotations

from typing import Any

import torch

from megalang.errors import UserError
from megalang.evaluate.common import GENERATE, load_scorer, read_jsonl, result_header, write_result


def references_of(record: dict[str, Any], where: str) -> list[str]:
    refs = record.get("references", record.get("reference"))
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise UserError(f"{where}: needs 'reference' (a string) or 'references' (a non-empty list of strings)")
    return refs


@torch.no_grad()
def generate_text(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 64,
    until: list[str] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> str:
    """Continue `prompt` (greedy when temperature is 0) and cut the text at the first stop string."""
    ids = torch.tensor([tokenizer.encode(prompt)], device=next(model.parameters()).device)
    sampling = temperature > 0
    if sampling:
        torch.manual_seed(seed)
    kwargs = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if sampling else {"do_sample": False}
    eos = tokenizer.eos_token_id
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, pad_token_id=eos if eos is not None else 0, **kwargs
    )
    text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    return cut_at_stop(text, until or [])


def cut_at_stop(text: str, until: list[str]) -> str:
    cut = min((text.find(s) for s in until if s and s in text), default=len(text))
    return text[:cut]


# --- metrics ----------------------------------------------------------------------------------------


def generation_metrics(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, 0-100), mean ROUGE F1 (rouge-score with stemming, 0-1, best
    reference per item), and exact match after stripping whitespace (0-1)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    width = max(map(len, refs))
    # sacrebleu wants one stream per reference position; a repeated reference changes neither score.
    streams = [[r[k] if k < len(r) else r[0] for r in refs] for k in range(width)]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hyp, rs in zip(hyps, refs, strict=True):
        scores = scorer.score_multi(rs, hyp)
        for k in rouge:
            rouge[k] += scores[k].fmeasure / len(hyps)
    return {
        "bleu": sacrebleu.corpus_bleu(hyps, streams).score,
        "chrf": sacrebleu.corpus_chrf(hyps, streams).score,
        **rouge,
        "exact_match": sum(h.strip() in {r.strip() for r in rs} for h, rs in zip(hyps, refs)) / len(hyps),
        "n": len(hyps),
    }


def evaluate_generate(
    model: str,
    data: str,
    out: str | None = None,
    max_new_tokens: int = 64,
    until: list[str] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """`megalang eval generate`: one generation per prompt, corpus metrics, and every output in `items`."""
    if max_new_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
        raise UserError("--max-new-tokens must be >= 1, --temperature >= 0 and --top-p in (0, 1]")
    records = read_jsonl(data, GENERATE)[: limit or None]
    refs = [references_of(r, f"{data}:{r['_line']}") for r in records]
    loaded, _ = load_scorer(model, 1)
    hyps = [
        generate_text(loaded.model, loaded.tokenizer, r["prompt"], max_new_tokens, until, temperature, top_p, seed + i)
        for i, r in enumerate(records)
    ]
    settings = {"max_new_tokens": max_new_tokens, "until": until, "temperature": temperature, "top_p": top_p, "seed": seed, "limit": limit}
    items = [{"line": r["_line"], "output": h, "references": rs} for r, h, rs in zip(records, hyps, refs)]
    return write_result(out, {**result_header("generate", model, data, settings), **generation_metrics(hyps, refs), "items": items})
