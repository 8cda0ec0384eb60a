"""train/muon.py: Muon's orthogonalisation and step against a reference written from the published iteration
(Keller Jordan's Muon), the split between Muon and AdamW, the pair as one optimizer (scheduler, DCP state, resume
changes), a falling loss, refused combinations, and resume bitwise after kill -9 (tests/dist/test_muon_dist.py:
FSDP2 on 2 ranks against one process)."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from typer.testing import CliRunner

from megalang.cli import app
from megalang.config import ModelConfig, OptimizerConfig, RunConfig, ScheduleConfig, TrainSection
from megalang.model.build import build_model
from megalang.train import resume_compat as compat
from megalang.train.muon import Muon, split_params
from megalang.train.optim import build_optimizer, build_scheduler, lr_factor

from .conftest import debug_config, train_capturing_weights
from .killing import (
    GLOBAL_BATCH_SAMPLES,
    assert_bitwise_equal_runs,
    kill_and_resume,
    kill_plan,
    make_kill_shards,
    overrides,
    run_to_completion,
    train_command,
)

A, B, C = 3.4445, -4.7750, 2.0315  # the quintic's coefficients (Keller Jordan, "Muon", 2024)


def reference_newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """The published iteration in fp32: X = G/(‖G‖_F + eps), then X ← aX + (bA + cA²)X with A = XXᵀ, on the wide
    orientation (a tall matrix is transposed first and back at the end)."""
    x = g.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        a = x @ x.T
        x = A * x + (B * a + C * a @ a) @ x
    return x.T if tall else x


def reference_muon_step(w, g, buf, lr, wd, momentum):
    """One step of Keller Jordan's Muon (Nesterov): the EMA momentum, the Nesterov mix, the orthogonalised
    update scaled by sqrt(max(1, rows/cols)), decoupled weight decay."""
    buf = buf.lerp(g, 1 - momentum)
    update = reference_newton_schulz(g.lerp(buf, momentum))
    return w * (1 - lr * wd) - lr * max(1, w.size(0) / w.size(1)) ** 0.5 * update, buf


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (48, 48)])
def test_orthogonalisation_matches_the_reference_newton_schulz(shape):
    from megalang.torch_compat import muon_orthogonalize

    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * torch.logspace(-1, 0, shape[1])
    got = muon_orthogonalize(g, (A, B, C), 5, 1e-7)
    assert got.shape == g.shape
    # torch runs the iteration in bf16, as the published code does: ~1 % from the fp32 reference (measured
    # 0.9–1.5 %), while the exact orthogonal factor UVᵀ, which 5 quintic steps do not reach, is ≥ 10 % away.
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert relative_error(got, reference_newton_schulz(g)) < 0.02
    assert relative_error(got, u @ vh) > 0.1 and relative_error(reference_newton_schulz(g), u @ vh) > 0.1
    # It orthogonalises: singular values spread 5× to 180× come out within 0.6–1.2 (the quintic's band).
    s_in, s_out = torch.linalg.svdvals(g), torch.linalg.svdvals(got.float())
    assert s_in.max() / s_in.min() > 5 and s_out.min() > 0.6 and s_out.max() < 1.2


def test_two_muon_steps_match_the_reference_step():
    gen = torch.Generator().manual_seed(1)
    w0, grads = torch.randn(24, 64, generator=gen), [torch.randn(24, 64, generator=gen) for _ in range(2)]
    for shape in ((24, 64), (64, 24)):  # wide, and tall (lr scaled by sqrt(64/24))
        p = torch.nn.Parameter(w0.reshape(shape).clone())
        opt = Muon([p], lr=0.02, weight_decay=0.1, momentum=0.95)
        w, buf = w0.reshape(shape).clone(), torch.zeros(shape)
        for g in grads:
            p.grad = g.reshape(shape).clone()
            opt.step()
            w, buf = reference_muon_step(w, g.reshape(shape), buf, 0.02, 0.1, 0.95)
        assert torch.equal(opt.state[p]["momentum_buffer"], buf)  # the momentum is elementwise fp32: exact
        decayed = w0.reshape(shape) * (1 - 0.02 * 0.1) ** 2  # the weights less the two orthogonalised updates
        assert relative_error(p.detach() - decayed, w - decayed) < 0.02  # the bf16 iteration, as above


def debug_model():
    return build_model(ModelConfig(preset="debug"), 100, 16, {}, 0)


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = debug_model()
    muon, adamw = split_params(model)
    kinds = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj")
    assert sorted(n for n, _ in muon) == sorted(f"model.layers.{i}.{k}.weight" for i in range(2) for k in kinds)
    assert sorted(n for n, _ in adamw) == sorted(
        ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"]
        + [f"model.layers.{i}.{n}.weight" for i in range(2) for n in ("input_layernorm", "post_attention_layernorm")])
    opt = build_optimizer(model, OptimizerConfig(muon_lr=0.03, muon_weight_decay=0.01), "muon")
    decay, no_decay, muon_group = opt.param_groups
    # group 0 (the logged lr) is AdamW's decayed group: the embedding and the output layer
    assert {id(p) for p in decay["params"]} == {id(model.model.embed_tokens.weight), id(model.lm_head.weight)}
    assert all(p.ndim == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0
    assert muon_group["lr"] == 0.03 and muon_group["weight_decay"] == 0.01 and muon_group["nesterov"]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_a_tied_embedding_stays_with_adamw():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    muon, adamw = split_params(model)
    assert len(muon) == 7 and "model.embed_tokens.weight" in dict(adamw)  # the head is the same tensor
    assert all(p is not model.lm_head.weight for _, p in muon)


def test_muon_runs_on_adamws_lr_and_decay_unless_given_its_own():
    model = debug_model()
    muon_group = build_optimizer(model, OptimizerConfig(lr=2e-3, weight_decay=0.05), "muon").param_groups[2]
    assert (muon_group["lr"], muon_group["weight_decay"], muon_group["adjust_lr_fn"]) == (2e-3, 0.05, "match_rms_adamw")
    assert muon_group["momentum"] == 0.95 and muon_group["ns_steps"] == 5


def step_with_grads(model, opt, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    opt.zero_grad()


def test_the_schedule_drives_both_optimizers():
    cfg = RunConfig(optimizer=OptimizerConfig(lr=1e-3, muon_lr=0.02), schedule=ScheduleConfig(min_lr=1e-4, warmup_steps=2),
                    train=TrainSection(max_steps=10, optimizer="muon"))
    model = debug_model()
    opt = build_optimizer(model, cfg.optimizer, "muon")
    sched = build_scheduler(opt, cfg)
    for step in range(5):
        adamw_lr, muon_lr = opt.param_groups[0]["lr"], opt.param_groups[2]["lr"]
        assert adamw_lr == pytest.approx(1e-3 * lr_factor(step, cfg)) and muon_lr == pytest.approx(0.02 * lr_factor(step, cfg))
        assert opt.optimizers[1].param_groups[0]["lr"] == muon_lr  # the same dict: the real Muon sees it
        step_with_grads(model, opt, step)
        sched.step()


def test_state_round_trips_through_dcp_state_dicts():
    """The pair's state as DCP reads and writes it (keyed by parameter name): a fresh model and optimizer loaded
    from it take the next steps bitwise like the original, with the schedule still reaching both optimizers."""
    options, cfg = StateDictOptions(flatten_optimizer_state_dict=True), RunConfig(train=TrainSection(max_steps=10))
    model = debug_model()
    opt = build_optimizer(model, OptimizerConfig(), "muon")
    sched = build_scheduler(opt, cfg)
    for seed in range(2):
        step_with_grads(model, opt, seed)
        sched.step()
    model_sd, optim_sd = get_state_dict(model, opt, options=options)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert f"state.{q}.momentum_buffer" in optim_sd and f"state.{q}.exp_avg" not in optim_sd
    assert "state.lm_head.weight.exp_avg" in optim_sd and "state.lm_head.weight.momentum_buffer" not in optim_sd
    # copies, as a load from disk gives: get_state_dict returns the live tensors
    model_sd, optim_sd = ({k: v.clone() if torch.is_tensor(v) else v for k, v in sd.items()} for sd in (model_sd, optim_sd))
    fresh = debug_model()
    fresh_opt = build_optimizer(fresh, OptimizerConfig(), "muon")
    fresh_sched = build_scheduler(fresh_opt, cfg)  # built before the load, as in setup
    set_state_dict(fresh, fresh_opt, model_state_dict=model_sd, optim_state_dict=optim_sd, options=options)
    fresh_sched.load_state_dict(sched.state_dict())
    for seed in (5, 6):
        for o, s in ((opt, sched), (fresh_opt, fresh_sched)):
            step_with_grads(model if o is opt else fresh, o, seed)
            s.step()  # loading replaced the optimizers' group dicts: the schedule must still reach them
        assert [g["lr"] for o in fresh_opt.optimizers for g in o.param_groups] == fresh_sched.get_last_lr()
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), name


def test_changed_muon_settings_apply_on_resume():
    cfg = RunConfig(optimizer=OptimizerConfig(muon_lr=0.05, muon_momentum=0.9, muon_weight_decay=0.01),
                    train=TrainSection(max_steps=10, optimizer="muon"))
    model = debug_model()
    opt = build_optimizer(model, OptimizerConfig(), "muon")  # as restored from a checkpoint with the defaults
    sched = build_scheduler(opt, cfg)
    sched.last_epoch = 3
    compat.apply_optimizer_changes(opt, sched, cfg)
    muon_group = opt.param_groups[2]
    assert muon_group["lr"] == pytest.approx(0.05 * lr_factor(3, cfg)) and sched.base_lrs[2] == 0.05
    assert muon_group["momentum"] == 0.9 and muon_group["weight_decay"] == 0.01
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr * lr_factor(3, cfg)) and "betas" in opt.param_groups[0]
    assert compat.optimizer_changed({"optimizer.muon_lr": (0.02, 0.05)})
    follows = RunConfig(optimizer=OptimizerConfig(lr=1e-3, weight_decay=0.2), train=TrainSection(max_steps=10, optimizer="muon"))
    compat.apply_optimizer_changes(opt, sched, follows)  # muon_lr and muon_weight_decay unset: AdamW's new values
    assert opt.param_groups[2]["lr"] == pytest.approx(1e-3 * lr_factor(3, follows)) and opt.param_groups[2]["weight_decay"] == 0.2


def test_muon_training_lowers_the_loss(shards, tmp_path):
    cfg = debug_config(shards, tmp_path / "run", train={"optimizer": "muon", "max_steps": 12})
    summary, weights = train_capturing_weights(cfg)
    lines = [__import__("json").loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["loss"] < 0.7 * lines[0]["loss"], [round(r["loss"], 3) for r in lines]
    assert summary["steps"] == 12 and weights


@pytest.mark.parametrize("override, named", [
    ("lora.rank=4", "lora.rank > 0"), ("privacy.target_epsilon=8", "privacy.target_epsilon"),
    ("parallel.tp=2", "parallel.tp > 1"), ("parallel.pp=2", "parallel.pp > 1"),
])
def test_unsupported_combinations_exit_2_in_one_line(shards, tmp_path, override, named):
    result = CliRunner().invoke(app, ["train", "model.preset=debug", f"data.shards={shards}", f"run.dir={tmp_path / 'run'}",
                                      "train.optimizer=muon", override])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"train.optimizer=muon does not support {named}" in lines[0] and not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_resumes_a_muon_run_bitwise(tmp_path_factory, tmp_path):
    """The kill harness of tests/train/test_kill_resume.py with train.optimizer=muon: killed mid accumulation and
    after the epoch boundary, rerun, the losses and final weights are bitwise those of an uninterrupted run."""
    shards, windows = make_kill_shards(tmp_path_factory.mktemp("muon-kill-data"))
    reference = tmp_path / "uninterrupted"
    run_to_completion(train_command(1, overrides(shards, reference, "train.optimizer=muon")))
    plan = kill_plan(windows, GLOBAL_BATCH_SAMPLES // 2, seed=20261205, randoms=0)
    kill_and_resume(1, shards, tmp_path / "run", plan, ["train.optimizer=muon"])
    assert_bitwise_equal_runs(tmp_path / "run", reference)
