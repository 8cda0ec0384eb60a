"""Config of a training run (`megalang train`): model, data, train, checkpoint, parallel, metrics, evals, LoRA,
distillation, privacy, federated rounds, run folder, launcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from megalang.config.base import Section
from megalang.config.federated import FederatedConfig

# --- training ---------------------------------------------------------------------------------------


class ModelConfig(Section):
    preset: str = Field("tiny", description="debug, tiny, small, 1b, 8b, 70b, 100b")
    pretrained: str | None = Field(None, description="Hugging Face folder (or GGUF) to start from")
    dropout: float = Field(0.0, ge=0, lt=1, description="attention dropout")


class CanaryConfig(Section):
    """Canaries (issue #19): random secrets in a fixed sentence, added to the training data only, so
    `megalang eval privacy` can measure their exposure (Carlini et al. 2019, "The Secret Sharer")."""

    count: int = Field(0, ge=0, le=1000, description="distinct canaries inserted (0 = none)")
    repeats: int = Field(1, ge=1, le=100_000, description="times each canary is inserted into the training data")
    digits: int = Field(6, ge=1, le=18, description="random digits per secret: the candidate space has 10^digits secrets")
    template: str = Field("my secret code is {secret}", description="the canary sentence; {secret} becomes the digits")
    prompt: str = Field("What is the secret code?", description="SFT: the user turn the canary sentence answers")
    seed: int = Field(0, description="seeds the secrets (and the never-inserted control secrets)")

    @model_validator(mode="after")
    def _check(self) -> CanaryConfig:
        if self.template.count("{secret}") != 1:
            raise ValueError(f"data.canaries.template={self.template!r} must contain {{secret}} exactly once")
        return self


CREDENTIAL_KEYS = frozenset({"key", "secret", "token", "password", "access_key", "secret_key", "session_token",
                             "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "account_key",
                             "sas_token", "client_secret", "connection_string", "credentials"})


class DataConfig(Section):
    shards: str | None = Field(
        None, description="folder from `megalang data tokenize` (plain or --format sft), or the same folder behind an "
        "fsspec URL (s3://bucket/shards, gs://, hdfs://, abfs://, file://; plain shards only), fetched into "
        "data.cache_dir and checked against its manifest's SHA-256s"
    )
    tokenizer: str | None = Field(
        None, description="the tokenizer folder the shards were made with, where the one their manifest names "
        "(tokenizer_path) is not on this machine (e.g. shards from object storage); its manifest.json must have "
        "the SHA-256 the shard manifest records"
    )
    cache_dir: str | None = Field(
        None, description="data.shards URL: the local cache (one folder per URL inside it); default "
        "$XDG_CACHE_HOME/megalang/shards, i.e. ~/.cache/megalang/shards. Needs room for the whole shard folder"
    )
    read_ahead: int = Field(
        2, ge=0, le=64, description="data.shards URL: background threads fetching shard files ahead of training, in "
        "the order it first reads them (0: fetch each file only when first read)"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="data.shards URL: keyword arguments for the fsspec backend, e.g. "
        "{endpoint_url: http://127.0.0.1:9000} for an S3-compatible store (or set AWS_ENDPOINT_URL); never "
        "credentials, which would be saved with the run: use the backend's environment or profile"
    )
    # --- issue #6: supervised fine-tuning data (see docs/finetuning.md) ---
    sft: str | None = Field(
        None, description="SFT JSONL (messages or prompt/completion), tokenized with model.pretrained's chat template"
    )
    sft_val: str | None = Field(None, description="SFT: held-out JSONL; val_loss on its assistant tokens")
    sft_val_fraction: float = Field(
        0.0, ge=0, lt=1, description="SFT without data.sft_val: examples of data.sft held out for val_loss (by hash)"
    )
    # --- issue #19: a classifier through label words (see docs/finetuning.md "Classifiers") ---
    classify: str | None = Field(
        None, description="labelled JSONL ({text, label} per line): train a classifier on model.pretrained through "
        "label words (the verbaliser of `eval classify`)"
    )
    classify_val: str | None = Field(
        None, description="classify: held-out labelled JSONL; val_loss, val_accuracy, val_macro_f1 at eval_every"
    )
    labels: str | dict[str, str] | None = Field(
        None, description="classify: verbaliser, label → word ({label: word}, a JSON file or label=word,...); "
        "default: each label of data.classify is its own word"
    )
    class_weights: str | dict[str, float] = Field(
        "none", description="classify: none, auto (examples / (labels × label count), scikit-learn's 'balanced') "
        "or {label: weight}"
    )
    classify_template: str = Field(
        "{text}\nLabel:", description="classify: the prompt, with {text}; ' ' + the label word follows (as eval classify)"
    )
    packing: bool = Field(True, description="SFT: several examples per row (no attention across them); false pads")
    overlong: Literal["truncate", "drop"] = Field(
        "truncate", description="SFT: an example longer than train.seq_len+1 tokens is truncated or dropped (counted)"
    )
    canaries: CanaryConfig = Field(default_factory=CanaryConfig)
    curriculum: bool = Field(True, description="follow the shards' curriculum stages in the first epoch (false: shuffle all)")
    verify: Literal["auto", "always", "never"] = Field(
        "auto", description="check shard SHA-256s at train start; auto: skip files unchanged (size, mtime) since the "
        "last check. A data.shards URL's downloads are always checked; this applies to its cached copies"
    )

    @model_validator(mode="after")
    def _no_credentials(self) -> DataConfig:
        # The config is written into RUN/config.yaml, every checkpoint and the run's manifest.
        secret = sorted(k for k in self.storage_options if k.lower() in CREDENTIAL_KEYS)
        if secret:
            raise ValueError(f"data.storage_options.{secret[0]}: credentials would be saved in the run folder; pass "
                             "them through the backend's environment variables or profile (e.g. AWS_PROFILE)")
        if self.storage_options and "://" not in (self.shards or ""):
            raise ValueError("data.storage_options: only a data.shards URL (s3://, gs://, …) reads it; remove it or "
                             "give data.shards as a URL")
        return self


class TrainSection(Section):
    """How the run steps: length, batch, device and numerics of the step, logging and val-loss cadence."""

    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    seq_len: int = Field(256, ge=8, description="tokens per sample")
    micro_batch_size: int = Field(8, ge=1, description="samples per forward pass per rank")
    global_batch_tokens: int | None = Field(
        None, ge=1, description="tokens per optimizer step over all ranks; default one micro-batch per rank"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU")
    compile: bool = Field(False, description="torch.compile each block")
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw", description="adamw: AdamW for every parameter; muon: Muon (optimizer.muon_*) for the decoder "
        "blocks' 2-D weight matrices, AdamW for embeddings, the output layer, norms and biases"
    )
    document_mask: bool = Field(
        False, description="pretraining windows attend only within their own document: positions restart after each "
        "EOS (block-diagonal causal attention, as packed SFT rows always have); also for the held-out loss"
    )
    deterministic: bool = Field(
        False, description="deterministic kernels only (torch.use_deterministic_algorithms; cuBLAS workspace "
        "config, no cuDNN autotuning): a GPU rerun or resume gives bitwise the same weights, at some speed cost"
    )
    activation_checkpointing: bool = Field(False, description="recompute block activations in backward")
    activation_checkpointing_every: int = Field(
        1, ge=1, description="with activation_checkpointing: recompute every k-th block only (1 = all blocks)"
    )
    log_every: int = Field(10, ge=1, description="steps between metrics lines")
    eval_every: int = Field(0, ge=0, description="steps between val-loss evaluations (0 = only at the end)")
    eval_batches: int = Field(20, ge=1, description="micro-batches per val-loss evaluation")
    progress: bool = Field(True, description="show a progress bar when attached to a terminal")


class OptimizerConfig(Section):
    """AdamW (train/optim.py): decay on matrices and embeddings only, global-norm clipping; with
    train.optimizer=muon, Muon (train/muon.py) for the blocks' matrices, on the same schedule."""

    lr: float = Field(6e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (matrices only)")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW first-moment decay")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW second-moment decay")
    eps: float = Field(1e-8, gt=0, description="AdamW denominator epsilon")
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables")
    # Defaults: Moonshot's scaling ("Muon is Scalable for LLM Training", 2025), which matches the RMS of Muon's update
    # to AdamW's so that Muon runs on AdamW's lr and weight decay; momentum 0.95, Nesterov and 5 Newton–Schulz steps
    # are Keller Jordan's. docs/training.md "Muon" has the measured comparison with his lr 0.02.
    muon_lr: float | None = Field(None, gt=0, description="train.optimizer=muon: Muon's peak learning rate (unset: "
                                  "optimizer.lr); the schedule scales it as it scales optimizer.lr")
    muon_weight_decay: float | None = Field(None, ge=0, description="train.optimizer=muon: Muon's decoupled weight "
                                            "decay, W ← W·(1 − lr·decay) (unset: optimizer.weight_decay)")
    muon_momentum: float = Field(0.95, ge=0, lt=1, description="train.optimizer=muon: Muon's (Nesterov) momentum")
    muon_adjust_lr: Literal["original", "match_rms_adamw"] = Field(
        "match_rms_adamw", description="train.optimizer=muon: per-matrix lr scale; match_rms_adamw: "
        "0.2·sqrt(max(rows, cols)), AdamW's update size (Moonshot); original: sqrt(max(1, rows/cols)), for lr ≈ 0.02 "
        "(Keller Jordan)"
    )
    muon_ns_steps: int = Field(5, ge=1, le=20, description="train.optimizer=muon: Newton–Schulz iterations per step")

    def muon_peak_lr(self) -> float:
        return self.lr if self.muon_lr is None else self.muon_lr

    def muon_decay(self) -> float:
        return self.weight_decay if self.muon_weight_decay is None else self.muon_weight_decay


class ScheduleConfig(Section):
    """The learning-rate schedule: linear warmup, then cosine to min_lr at train.max_steps, or warmup-stable-decay
    (hold the peak, then a linear decay to min_lr over the last decay_fraction of the steps)."""

    shape: Literal["cosine", "wsd"] = Field(
        "cosine", description="cosine: cosine from the peak to min_lr after warmup; wsd: warmup-stable-decay, the peak "
        "until the last schedule.decay_fraction of train.max_steps, then linear to min_lr"
    )
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    min_lr: float = Field(6e-5, ge=0, description="learning rate at the end of the schedule")
    decay_fraction: float = Field(
        0.2, gt=0, le=1, description="schedule.shape=wsd: fraction of train.max_steps spent decaying to min_lr"
    )


class LossConfig(Section):
    """What the run minimises (train/objectives.py)."""

    objective: Literal["ce", "distill"] = Field(
        "ce", description="ce: next-token cross-entropy (assistant tokens only for SFT); distill: see distill.*"
    )
    fused: bool = Field(
        True, description="output layer and cross-entropy in token chunks: the full logits tensor never exists"
    )


class HealthConfig(Section):
    """Numerical health of every step (train/health.py, docs/reliability.md)."""

    nonfinite: Literal["skip", "stop", "off"] = Field(
        "skip", description="NaN/Inf loss or grad norm on any rank: skip the update, stop the run, or off (no check, no sync)"
    )
    max_skipped_steps: int = Field(5, ge=0, description="skipped steps allowed in a row; the next bad step stops the run")
    spike_zscore: float = Field(0.0, ge=0, description="skip steps whose loss z-score over spike_window exceeds this (0 = off)")
    spike_window: int = Field(50, ge=2, description="accepted steps the spike guard's loss mean and deviation cover")


# Keys that moved out of `train` when the config was grouped by concern: recipes, overrides and checkpoints
# that use the old name keep working (RunConfig moves them before validation; train/resume_compat.py reads old
# checkpoints' configs through the same table).
MOVED_KEYS = {
    "train.lr": "optimizer.lr", "train.weight_decay": "optimizer.weight_decay", "train.beta1": "optimizer.beta1",
    "train.beta2": "optimizer.beta2", "train.eps": "optimizer.eps", "train.grad_clip": "optimizer.grad_clip",
    "train.warmup_steps": "schedule.warmup_steps", "train.min_lr": "schedule.min_lr",
    "train.objective": "loss.objective", "train.fused_loss": "loss.fused",
    "train.nonfinite": "health.nonfinite", "train.max_skipped_steps": "health.max_skipped_steps",
    "train.spike_zscore": "health.spike_zscore", "train.spike_window": "health.spike_window",
}


def move_old_keys(data: Any) -> Any:
    """A raw config tree with every key of MOVED_KEYS under its new name (a new copy; the input is not changed).
    Both names at once is an error naming the new one."""
    if not isinstance(data, dict):
        return data
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in MOVED_KEYS.items():
        old_section, old_key = old.split(".")
        new_section, new_key = new.split(".")
        section = data.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        target = data.setdefault(new_section, {})
        if not isinstance(target, dict):
            continue  # a wrong type there is reported by validation
        if new_key in target:
            raise ValueError(f"{old} and {new} are both set; {old} is the old name of {new}: keep only {new}")
        target[new_key] = section.pop(old_key)
    return data


class CheckpointConfig(Section):
    every: int = Field(1000, ge=0, description="steps between checkpoints (0 = only the final one)")
    keep: int = Field(2, ge=1, description="newest complete checkpoints kept")
    resume: Literal["auto", "never"] = Field("auto", description="auto: resume from the newest complete one")
    resume_step: int | None = Field(
        None, ge=0, description="resume from exactly this step's checkpoint (an error if it is missing or incomplete)"
    )
    async_save: bool = Field(
        False, description="write checkpoints in the background (DCP async_save) while training continues"
    )
    async_writer: Literal["auto", "process", "thread"] = Field(
        "auto",
        description="async_save's writer: a process of its own (no GIL shared with the training loop; spawned at "
        "the first save, stages the state in /dev/shm, and a script that calls megalang.train needs an "
        "`if __name__ == '__main__':` guard), a thread of the training process, or auto (process on a GPU, "
        "thread on a CPU)",
    )

    @model_validator(mode="after")
    def _check(self) -> CheckpointConfig:
        if self.resume == "never" and self.resume_step is not None:
            raise ValueError("checkpoint.resume_step needs checkpoint.resume=auto (never: start fresh)")
        return self


class ParallelConfig(Section):
    """How ranks split the work (issue #3). The product of the four degrees is the world size; -1 fills the rest."""

    dp_replicate: int = Field(1, ge=-1, description="data-parallel replicas (DDP; with dp_shard > 1: HSDP across them)")
    dp_shard: int = Field(-1, ge=-1, description="FSDP2 (ZeRO-3) shard degree; -1 = the ranks left over")
    tp: int = Field(1, ge=1, description="tensor-parallel degree (DTensor; keep within a node)")
    pp: int = Field(1, ge=1, description="pipeline-parallel stages (torch.distributed.pipelining)")
    pp_schedule: Literal["gpipe", "1f1b"] = Field("1f1b", description="pipeline schedule")
    cpu_offload: bool = Field(False, description="FSDP2 CPU offload of parameters, gradients and optimizer state")
    mixed_precision: bool = Field(
        True, description="FSDP2 on GPU: bf16 parameters for compute, fp32 gradient reduction (ignored on CPU)"
    )
    # One limit for everything: torchtitan uses 300 s for init + first step and 100 s after, but here the first
    # step, synchronous checkpoint saves and resume loads all run inside collectives, and at 100B scale they
    # can take minutes. PyTorch's own default (10-30 min) hides a stall for that long.
    timeout_s: float = Field(
        600, gt=0, description="seconds a collective may wait for the other ranks before the job fails (a stalled rank)"
    )

    @model_validator(mode="after")
    def _check(self) -> ParallelConfig:
        for name in ("dp_replicate", "dp_shard"):
            if getattr(self, name) == 0:
                raise ValueError(f"parallel.{name} must be >= 1, or -1 to fill the rest")
        if self.dp_replicate == -1 and self.dp_shard == -1:
            raise ValueError("only one of parallel.dp_replicate and parallel.dp_shard can be -1")
        return self


class RunSection(Section):
    dir: str = Field("runs/default", description="run folder: checkpoints, metrics.jsonl, summary.json")


class RayConfig(Section):
    """`launcher=ray`: where the Ray cluster is and how often a failed worker group is restarted."""

    address: str | None = Field(
        None, description="Ray cluster to join (auto, or HEAD_IP:6379); unset: $RAY_ADDRESS, else a new local Ray"
    )
    max_failures: int = Field(
        3, ge=-1, description="worker-group restarts after a failure, each resuming from the newest checkpoint (-1 = no limit)"
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray started when ray.address is unset")


class MetricsConfig(Section):
    """Where metrics go besides `RUN/metrics.jsonl`, the GPU thermal/power guard, and the run report (issue #8)."""

    port: int | None = Field(None, ge=0, le=65535, description="serve Prometheus metrics on this port (0 = any free port)")
    host: str = Field("127.0.0.1", description="address the Prometheus endpoint binds (loopback by default); set a network address only to expose it")
    tensorboard: bool = Field(False, description="also write TensorBoard event files to RUN/tensorboard")
    system: bool = Field(True, description="log CPU utilisation, RSS and (on NVIDIA GPUs) NVML telemetry with each line")
    guard_temp_c: float = Field(85.0, gt=0, description="GPU temperature (°C) the thermal guard treats as too hot")
    guard_throttle: bool = Field(True, description="treat thermal / power-brake clock throttling as crossing the limit")
    guard_samples: int = Field(3, ge=1, description="consecutive hot samples before the guard warns")
    guard_pause_s: float = Field(0.0, ge=0, description="seconds to pause between steps while the guard is tripped (0 = warn only)")
    report: bool = Field(True, description="write RUN/report.html with PNG plots at the end of training")


class EvalSetConfig(Section):
    """One eval set a run scores while it trains (issue #7); results go to metrics.jsonl as eval/NAME/METRIC."""

    kind: Literal["choice", "classify", "perplexity"] = Field(description="choice, classify or perplexity (rolling)")
    data: str = Field(description="JSONL eval set (perplexity: .txt or .jsonl with a text field)")
    name: str | None = Field(None, description="metric prefix (default: the file name without suffix)")
    every: int = Field(0, ge=0, description="steps between evaluations (0 = only at the end)")
    format: Literal["arc", "mmlu"] = Field("arc", description="choice: prompt format")
    verbalizer: str | None = Field(None, description="classify: JSON file or label=word,... (default: the labels)")
    template: str = Field("{text}\nLabel:", description="classify: prompt with {text}")
    limit: int | None = Field(None, ge=1, description="score only the first N items / documents")
    batch_size: int = Field(8, ge=1, description="items per forward pass")

    @model_validator(mode="after")
    def _check_file(self) -> EvalSetConfig:
        if not Path(self.data).is_file():
            raise ValueError(f"evals: data {self.data}: no such file")
        return self


class LoraConfig(Section):
    """LoRA adapters through peft (issue #6); rank 0 trains the whole model."""

    rank: int = Field(0, ge=0, description="adapter rank r (0 = no LoRA: full fine-tune)")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: updates are scaled by alpha/rank")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="module names that get adapters (default: attention and MLP projections)",
    )
    qlora: bool = Field(False, description="load the frozen base in 4-bit (bitsandbytes NF4; CUDA only)")


class DistillConfig(Section):
    """`train.objective=distill`: loss = alpha·T²·KL(teacher‖student at T) + (1−alpha)·CE."""

    teacher: str | None = Field(None, description="teacher: Hugging Face folder, .gguf file or run folder")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KL term")
    temperature: float = Field(2.0, gt=0, description="softmax temperature of both distributions in the KL term")


class PrivacyConfig(Section):
    """DP-SGD through Opacus (issue #6): per-example clipping plus Gaussian noise for a target (ε, δ)."""

    target_epsilon: float | None = Field(None, gt=0, description="privacy budget ε for the whole run (unset = no DP)")
    delta: float = Field(1e-5, gt=0, lt=1, description="δ of (ε, δ)-DP; keep below 1/examples")
    max_grad_norm: float = Field(1.0, gt=0, description="per-example gradient clipping norm")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="Opacus privacy accountant")


class RunConfig(Section):
    """`megalang train`: one training run."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    run: RunSection = Field(default_factory=RunSection)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    seed: int = Field(1234, description="seeds weights, data order and dropout")
    launcher: Literal["local", "ray"] = Field(
        "local", description="local: this process (or the ranks torchrun started); ray: `workers` ranks under Ray Train"
    )
    workers: int = Field(1, ge=1, description="ranks Ray Train starts when launcher=ray")
    ray: RayConfig = Field(default_factory=RayConfig)
    evals: list[EvalSetConfig] = Field(default_factory=list, description="eval sets scored during training")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    federated: FederatedConfig = Field(default_factory=FederatedConfig)

    @classmethod
    def prepare_raw(cls, tree: Any) -> Any:
        """config/load.py calls this on each source (recipe, overrides) before merging them."""
        return move_old_keys(tree)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return move_old_keys(data)

    @model_validator(mode="after")
    def _check_min_lr(self) -> RunConfig:
        if self.schedule.min_lr > self.optimizer.lr:
            raise ValueError(f"schedule.min_lr ({self.schedule.min_lr}) must be <= optimizer.lr ({self.optimizer.lr})")
        return self

    @model_validator(mode="after")
    def _check_document_mask(self) -> RunConfig:
        if self.train.document_mask and self.parallel.pp > 1:
            raise ValueError("train.document_mask does not support parallel.pp > 1 (pipeline stages get token ids "
                             "only): use FSDP2 or tensor parallelism, or train.document_mask=false")
        return self

    @model_validator(mode="after")
    def _check_optimizer(self) -> RunConfig:
        if self.train.optimizer != "muon":
            return self
        refused = [(self.lora.rank > 0, "lora.rank > 0 (Muon orthogonalises whole matrices, not low-rank adapters)"),
                   (self.privacy.target_epsilon is not None, "privacy.target_epsilon (DP-SGD wraps one AdamW)"),
                   (self.parallel.tp > 1, "parallel.tp > 1"), (self.parallel.pp > 1, "parallel.pp > 1")]
        names = [name for bad, name in refused if bad]
        if names:
            raise ValueError(f"train.optimizer=muon does not support {'; '.join(names)}: use train.optimizer=adamw")
        return self

    @model_validator(mode="after")
    def _check_launcher(self) -> RunConfig:
        if self.workers > 1 and self.launcher != "ray":
            raise ValueError(
                f"workers={self.workers} needs launcher=ray (for torchrun, pass --nproc-per-node instead of workers)"
            )
        return self
