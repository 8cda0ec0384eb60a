"""`megalang eval harness`: lm-evaluation-harness tasks on a megalang run, export or GGUF.

`MegalangLM` is an lm-eval `LM` backed by our `Scorer`, so every lm-eval task (including local YAML tasks
over local JSON files) runs on megalang models with lm-eval's prompts and metrics and our faster
prefix-shared scoring. It is registered as lm-eval model `megalang`, so
`lm_eval --model megalang --model_args pretrained=RUN_OR_EXPORT_OR_GGUF` works too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.evaluate.common import load_scorer, result_header, write_result

try:  # lm-eval is the `eval` extra; everything else in megalang works without it.
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError:  # pragma: no cover - exercised only without the extra
    LM, register_model = object, None


class MegalangLM(LM):  # type: ignore[misc, valid-type]
    """lm-eval's three request types on a megalang Scorer."""

    def __init__(self, scorer, max_gen_toks: int = 256):
        super().__init__()
        self.scorer = scorer
        self.max_gen_toks = max_gen_toks

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> MegalangLM:
        """`pretrained=PATH[,batch_size=N][,max_length=N]`, as `lm_eval --model megalang --model_args …` passes it."""
        args = dict(kv.split("=", 1) for kv in arg_string.split(",") if kv)
        if "pretrained" not in args:
            raise UserError("--model_args: pretrained=RUN_OR_EXPORT_OR_GGUF is required")
        batch = (additional_config or {}).get("batch_size") or args.get("batch_size") or 16
        max_length = int(args["max_length"]) if "max_length" in args else None
        _, scorer = load_scorer(args["pretrained"], int(batch) if str(batch).isdigit() else 16, max_length)
        return cls(scorer)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.scorer.loglikelihood([req.args for req in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Disjoint windows of the model's max length, as HFLM."""
        return self.scorer.loglikelihood_rolling([self.scorer.encode(req.args[0]) for req in requests])

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from megalang.evaluate.textgen import generate_text

        outputs = []
        for context, gen_kwargs in (req.args for req in requests):
            kwargs = dict(gen_kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            eos = self.scorer.tokenizer.eos_token
            if eos and eos not in until:
                until.append(eos)
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            outputs.append(
                generate_text(
                    self.scorer.model, self.scorer.tokenizer, context,
                    max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)), until=until,
                    temperature=temperature, top_p=float(kwargs.get("top_p", 1.0)),
                )
            )
        return outputs


if register_model is not None:
    register_model("megalang")(MegalangLM)


def run_tasks(lm, tasks: list[str], include_path: str | None = None, num_fewshot: int | None = None, limit: int | None = None, log_samples: bool = False) -> dict[str, Any]:
    """lm-eval's `simple_evaluate` on an LM object (ours or HFLM: the parity tests call both the same way)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if include_path and not Path(include_path).is_dir():
        raise UserError(f"--include-path {include_path}: no such folder of task YAML files")
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    unknown = [t for t in tasks if not manager.match_tasks([t])]
    if unknown:
        raise UserError(f"--tasks: unknown task(s) {', '.join(unknown)}; local YAML tasks need --include-path DIR")
    results = simple_evaluate(
        model=lm, tasks=tasks, task_manager=manager, num_fewshot=num_fewshot, limit=limit, log_samples=log_samples,
        bootstrap_iters=0,
    )
    return results


def evaluate_harness(
    model: str,
    tasks: list[str],
    out: str | None = None,
    include_path: str | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """`megalang eval harness`: lm-eval's results table (per task and metric) in our result JSON."""
    if LM is object:
        raise UserError("lm-eval is not installed; pip install 'megalang[eval]'")
    if not tasks:
        raise UserError("--tasks: name at least one lm-eval task")
    _, scorer = load_scorer(model, batch_size, max_length)
    raw = run_tasks(MegalangLM(scorer), tasks, include_path, num_fewshot, limit)
    settings = {"tasks": tasks, "include_path": include_path, "num_fewshot": num_fewshot, "batch_size": batch_size, "limit": limit, "max_length": scorer.max_length}
    # lm-eval results hold numpy scalars and task objects; keep what serialises, as strings otherwise.
    body = json.loads(json.dumps({k: raw.get(k) for k in ("results", "versions", "n-shot", "configs", "n-samples")}, default=str))
    return write_result(out, {**result_header("harness", model, None, settings), "lm_eval_version": _lm_eval_version(), **body})


def _lm_eval_version() -> str:
    from importlib import metadata

    return metadata.version("lm_eval")
