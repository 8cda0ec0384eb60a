"""`megalang train`, `launch`, `export`, `generate`, `demo`, `plan` and `report`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from megalang.cli.app import app, field_option, given, out, refuse_unused, split_recipe, user_errors
from megalang.config import DataPlanConfig, PlanConfig, RunConfig, ShapeConfig, build_config, config_help, load_config

# --- train / eval / export / generate ---------------------------------------------------------------

_TRAIN_HELP = "\n".join(f"  {k} = {d}  {desc}" for k, d, desc in config_help(RunConfig))


@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Train a model: `megalang train [RECIPE.yaml] [key.sub=value ...]`.\n\nKeys:\n\n" + _TRAIN_HELP.replace("\n", "\n\n"),
)
@user_errors
def train_cmd(args: Annotated[Optional[list[str]], typer.Argument(help="Recipe file, then key=value overrides.")] = None):
    recipe, overrides = split_recipe(args or [])
    cfg = load_config(RunConfig, recipe, overrides)
    if cfg.launcher == "ray":
        from megalang.ray_launch import train_on_ray as train
    else:
        from megalang.train.trainer import train

    summary = train(cfg)
    out.print(json.dumps(summary, indent=2))


@app.command(
    "launch",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@user_errors
def launch_cmd(
    ctx: typer.Context,
    nproc: Annotated[int, typer.Option(help="Processes per node (one per GPU; on CPU, a few).")] = 1,
    nnodes: Annotated[str, typer.Option(help="Nodes, or MIN:MAX for an elastic job.")] = "1",
    rdzv_endpoint: Annotated[Optional[str], typer.Option(help="HOST:PORT every node reaches (multi-node).")] = None,
    rdzv_id: Annotated[str, typer.Option(help="Job id shared by the nodes of one run.")] = "megalang",
    max_restarts: Annotated[int, typer.Option(help="Restart the whole group this often after a failure "
                                                   "(each restart resumes from the newest checkpoint).")] = 0,
):
    """Run a command on several processes through torchrun: `megalang launch --nproc 2 -- train RECIPE.yaml k=v`."""
    from megalang.launch import launch

    launch(list(ctx.args), nproc, nnodes, rdzv_endpoint, rdzv_id, max_restarts)


@app.command("export")
@user_errors
def export_cmd(
    run: Annotated[str, typer.Option(help="Run folder (gguf/onnx: also a Hugging Face folder from `megalang export`).")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output folder.")],
    fmt: Annotated[str, typer.Option("--format", help="hf (safetensors folder), gguf (one llama.cpp/Ollama file) or onnx (model.onnx for ONNX Runtime).")] = "hf",
    quant: Annotated[Optional[str], typer.Option(help="Weight type of the exported file; gguf: f16 (default), bf16, f32, q8_0, q5_1, q5_0, q4_1, q4_0; onnx: int8 (default fp32).")] = None,
    step: Annotated[Optional[int], typer.Option(help="Checkpoint step (default: the newest complete one).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    merge: Annotated[bool, typer.Option(help="LoRA run, hf format: merge the adapters into the base (else: the adapter folder).")] = False,
    sign: Annotated[Optional[str], typer.Option(help="EC private key (PEM) that signs the release into model.sig; "
                                                     "check with `megalang verify OUT --key PUB.pem`.")] = None,
):
    """Write a release folder: a Hugging Face folder (safetensors, config, tokenizer) that plain transformers loads, or
    OUT/model-<quant>.gguf for llama.cpp and Ollama."""
    from megalang.export import export

    export(run, out_dir, step=step, overwrite=overwrite, merge=merge, fmt=fmt, quant=quant, sign=sign)
    out.print(f"exported {out_dir}")


@app.command("generate")
@user_errors
def generate_cmd(
    model: Annotated[str, typer.Option(help="Exported folder (an onnx one runs in ONNX Runtime), run folder, or .gguf file (or a folder holding one).")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="0 = off.")] = 50,
    top_p: Annotated[float, typer.Option(help="1.0 = off.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    backend: Annotated[str, typer.Option(help="auto (llama.cpp for a .gguf, onnxruntime for an ONNX export, transformers otherwise), transformers, llama.cpp or onnxruntime.")] = "auto",
):
    """Continue a prompt."""
    from megalang.generate import generate

    text = generate(model, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                    backend=backend)
    out.print(text, markup=False)


@app.command("demo")
@user_errors
def demo_cmd(
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Demo folder.")] = "runs/demo",
    max_steps: Annotated[Optional[int], typer.Option(help="Training steps (default: the demo recipe's).")] = None,
    preset: Annotated[str, typer.Option(help="Model preset.")] = "tiny",
):
    """The whole pipeline on the Python standard library's own source, with a few modules held out."""
    from megalang.demo import demo

    demo(out_dir, max_steps=max_steps, preset=preset, console=out)


# --- planning and monitoring ------------------------------------------------------------------------


@app.command("plan")
@user_errors
def plan_cmd(
    ctx: typer.Context,
    recipe: Annotated[Optional[str], typer.Argument(
        help="Plan YAML (keys as below; options override it), or `data` for the data job's plan.")] = None,
    preset: Annotated[Optional[str], field_option(PlanConfig, "preset")] = None,
    params: Annotated[Optional[str], field_option(PlanConfig, "params", suffix=", e.g. 7e9 or 100B")] = None,
    hidden_size: Annotated[
        Optional[int], field_option(ShapeConfig, "hidden_size", prefix="Shape: ", suffix=" (with --layers, --intermediate-size, --heads)")
    ] = None,
    layers: Annotated[Optional[int], field_option(ShapeConfig, "num_layers", "--layers", prefix="Shape: ")] = None,
    intermediate_size: Annotated[Optional[int], field_option(ShapeConfig, "intermediate_size", prefix="Shape: ")] = None,
    heads: Annotated[Optional[int], field_option(ShapeConfig, "num_heads", "--heads", prefix="Shape: ")] = None,
    kv_heads: Annotated[Optional[int], field_option(ShapeConfig, "num_kv_heads", "--kv-heads", prefix="Shape: ")] = None,
    vocab_size: Annotated[Optional[int], field_option(ShapeConfig, "vocab_size", prefix="Shape: ")] = None,
    tokens: Annotated[Optional[str], field_option(PlanConfig, "tokens", suffix=", e.g. 2e12 or 10T")] = None,
    seq_len: Annotated[Optional[int], field_option(PlanConfig, "seq_len")] = None,
    global_batch_tokens: Annotated[Optional[int], field_option(PlanConfig, "global_batch_tokens")] = None,
    micro_batch_size: Annotated[Optional[int], field_option(PlanConfig, "micro_batch_size")] = None,
    gpu: Annotated[Optional[str], field_option(PlanConfig, "gpu")] = None,
    gpus: Annotated[Optional[int], field_option(PlanConfig, "gpus")] = None,
    gpus_per_node: Annotated[Optional[int], field_option(PlanConfig, "gpus_per_node")] = None,
    sharding: Annotated[Optional[str], field_option(PlanConfig, "sharding")] = None,
    tp: Annotated[Optional[int], field_option(PlanConfig, "tp")] = None,
    pp: Annotated[Optional[int], field_option(PlanConfig, "pp")] = None,
    activation_checkpointing: Annotated[Optional[bool], field_option(PlanConfig, "activation_checkpointing")] = None,
    precision: Annotated[Optional[str], field_option(PlanConfig, "precision")] = None,
    optimizer: Annotated[Optional[str], field_option(PlanConfig, "optimizer")] = None,
    mfu: Annotated[Optional[float], field_option(PlanConfig, "mfu")] = None,
    deadline_days: Annotated[Optional[float], field_option(PlanConfig, "deadline_days")] = None,
    workers: Annotated[Optional[int], field_option(DataPlanConfig, "workers", prefix="plan data: ")] = None,
    kept_fraction: Annotated[Optional[float], field_option(DataPlanConfig, "kept_fraction", prefix="plan data: ")] = None,
    bytes_per_token: Annotated[
        Optional[float], field_option(DataPlanConfig, "bytes_per_token", prefix="plan data: ")] = None,
    token_bytes: Annotated[Optional[int], field_option(DataPlanConfig, "token_bytes", prefix="plan data: ")] = None,
    rates: Annotated[Optional[str], field_option(DataPlanConfig, "rates", prefix="plan data: ")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """FLOPs, memory per GPU, tokens/s, days and a verdict for a training plan; `plan data`: hours and core-hours
    of each data stage. Exit 1 when the plan is not feasible."""
    from megalang.config import load_yaml
    from megalang.plan import format_plan, parse_count, plan

    data_only = ["workers", "kept_fraction", "bytes_per_token", "token_bytes", "rates"]
    if recipe == "data":  # a plan YAML literally named `data` is still reachable as ./data
        from megalang.plan_data import format_data_plan, plan_data

        refuse_unused(ctx, [p.name for p in ctx.command.params if p.name not in
                            ("recipe", "tokens", "deadline_days", "as_json", *data_only)],
                      "`plan data` plans the data job; it takes --tokens, --workers, --kept-fraction, "
                      "--bytes-per-token, --token-bytes, --rates and --deadline-days")
        options = given(tokens=parse_count(tokens, "--tokens") if tokens else None, workers=workers,
                        kept_fraction=kept_fraction, bytes_per_token=bytes_per_token, token_bytes=token_bytes,
                        rates=rates, deadline_days=deadline_days)
        result = plan_data(build_config(DataPlanConfig, options, "options"))
        out.print(json.dumps(result, indent=2) if as_json else format_data_plan(result), markup=False)
        if not result["feasible"]:
            raise typer.Exit(1)
        return
    refuse_unused(ctx, data_only, "it is an option of `megalang plan data`, not of a training plan")

    data = load_yaml(recipe) if recipe else {}
    shape = given(hidden_size=hidden_size, num_layers=layers, intermediate_size=intermediate_size, num_heads=heads,
                  num_kv_heads=kv_heads, vocab_size=vocab_size)
    chosen = {"preset": preset, "params": parse_count(params, "--params") if params else None, "shape": shape or None}
    if any(v is not None for v in chosen.values()):
        for key in chosen:
            data.pop(key, None)
        data.update({k: v for k, v in chosen.items() if v is not None})
    data.update(given(tokens=parse_count(tokens, "--tokens") if tokens else None, seq_len=seq_len,
                      global_batch_tokens=global_batch_tokens, micro_batch_size=micro_batch_size, gpu=gpu, gpus=gpus,
                      gpus_per_node=gpus_per_node, sharding=sharding, tp=tp, pp=pp,
                      activation_checkpointing=activation_checkpointing, precision=precision, optimizer=optimizer, mfu=mfu,
                      deadline_days=deadline_days))
    result = plan(build_config(PlanConfig, data, recipe or "options"))
    out.print(json.dumps(result, indent=2) if as_json else format_plan(result), markup=False)
    if not result["feasible"]:
        raise typer.Exit(1)


@app.command("report")
@user_errors
def report_cmd(run: Annotated[str, typer.Argument(help="Run folder (with metrics.jsonl).")]):
    """Write RUN/report.html with PNG plots (loss, lr, grad norm, tokens/s, MFU, memory) and a summary table."""
    from megalang.monitor.report import write_report

    path = write_report(run)
    out.print(f"report {path}", markup=False)
