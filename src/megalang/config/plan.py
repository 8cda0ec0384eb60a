"""Config of `megalang plan`: a model shape, tokens and a cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from megalang.config.base import Section

# --- planning ---------------------------------------------------------------------------------------


class ShapeConfig(Section):
    """A Llama-style shape for `megalang plan` when neither a preset nor a bare parameter count is wanted."""

    hidden_size: int = Field(ge=1, description="model width")
    num_layers: int = Field(ge=1, description="decoder blocks")
    intermediate_size: int = Field(ge=1, description="SwiGLU MLP width")
    num_heads: int = Field(ge=1, description="query heads")
    num_kv_heads: int | None = Field(None, ge=1, description="key/value heads (GQA); default = num_heads")
    vocab_size: int = Field(128_256, ge=1, description="vocabulary size")
    tie_word_embeddings: bool = Field(False, description="input embedding shared with the LM head")


class PlanConfig(Section):
    """`megalang plan`: FLOPs, memory per GPU, time and a verdict for model × tokens × hardware."""

    preset: str | None = Field(None, description="model preset (debug … 100b); or give params or shape")
    params: float | None = Field(None, gt=0, description="parameter count; a Llama-like shape is derived from it")
    shape: ShapeConfig | None = Field(None, description="explicit model shape")
    tokens: float = Field(gt=0, description="training tokens in total (all epochs)")
    seq_len: int = Field(2048, ge=1, description="tokens per sequence")
    global_batch_tokens: int = Field(4_194_304, ge=1, description="tokens per optimizer step over all GPUs")
    micro_batch_size: int = Field(1, ge=1, description="sequences per forward pass per GPU")
    gpu: str = Field("h100", description="a100-40gb, a100-80gb, h100, h200, b200, or cpu (this machine, measured)")
    gpus: int = Field(8, ge=1, description="GPUs in total")
    gpus_per_node: int = Field(8, ge=1, description="GPUs sharing one NVLink domain")
    sharding: Literal["ddp", "zero1", "zero2", "zero3"] = Field(
        "zero3", description="ddp: replicate all; zero1: shard optimizer; zero2: + gradients; zero3 (FSDP): + parameters"
    )
    tp: int = Field(1, ge=1, description="tensor-parallel degree (with sequence parallelism)")
    pp: int = Field(1, ge=1, description="pipeline stages (1F1B schedule)")
    activation_checkpointing: bool = Field(False, description="recompute each block in backward (keeps its input only)")
    fused_loss: bool = Field(True, description="loss.fused: output layer + loss in token chunks (no full logits)")
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw", description="train.optimizer: adamw (2 fp32 moments per parameter) or muon (1 momentum per block "
        "matrix, AdamW for the rest; Newton–Schulz FLOPs added to each step)"
    )
    precision: Literal["bf16", "fp16", "fp8", "fp32"] = Field("bf16", description="compute precision: bf16, fp16, fp8 or fp32 (master weights fp32)")
    mfu: float = Field(0.4, gt=0, le=1, description="model FLOPs utilisation assumed for time estimates")
    deadline_days: float | None = Field(None, gt=0, description="wall-clock budget; the verdict checks it")

    @model_validator(mode="after")
    def _check(self) -> PlanConfig:
        given = [name for name in ("preset", "params", "shape") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of preset, params or shape" + (f" (got {', '.join(given)})" if given else ""))
        return self


class DataPlanConfig(Section):
    """`megalang plan data`: hours and core-hours of each data stage for a corpus of `tokens`, from measured
    per-core rates (bench/data_stages.py)."""

    tokens: float = Field(gt=0, description="tokens the prepared corpus must hold (what `data tokenize` writes)")
    workers: int = Field(ge=1, description="CPU cores the data job runs on in total (Ray workers × cores each)")
    kept_fraction: float = Field(
        1.0, gt=0, le=1, description="share of the raw input's bytes that survives `data prepare` (filters, "
        "scrubbing, dedup); 1.0 plans as if nothing were removed — a web crawl keeps far less"
    )
    bytes_per_token: float | None = Field(None, gt=0, description="text bytes per token of your tokenizer on your "
                                          "data (default: the rates file's measurement)")
    token_bytes: Literal[2, 4] = Field(4, description="bytes per token in the shards: 2 for vocabularies up to "
                                       "65,536, else 4")
    rates: str | None = Field(None, description="a rates JSON written by `bench/data_stages.py --write FILE` on your "
                              "hardware (default: the rates measured on megalang's 2-core CI machine)")
    deadline_days: float | None = Field(None, gt=0, description="wall-clock budget for the whole data job")
