"""What one real training step allocates and computes, measured with torch's own tools: `MemTracker`
(`FSDPMemTracker` for FSDP2 modules) for peak bytes and `FlopCounterMode` for FLOPs. Shared by
test_plan_accuracy.py and the 2-rank worker it launches (plan_fsdp_worker.py)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from megalang.train import trainer


def _query_heads(query, other):
    """A key/value shape with the query's head count: grouped-query attention computes every query head against
    its shared key/value head, so the FLOPs are those of full heads (torch 2.13's formula broadcasts the same
    way; 2.11's asserts equal head counts)."""
    return (other[0], query[1], *other[2:])


def _cpu_flash(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, _query_heads(query, key), _query_heads(query, value))


def _cpu_flash_backward(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, _query_heads(query, key), _query_heads(query, value))


# FlopCounterMode knows the CUDA attention kernels; the CPU flash kernel sdpa picks here gets the same formulas.
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


def measure_step(t: trainer.Trainer, fsdp: bool = False) -> tuple[float, float]:
    """(peak bytes, FLOPs) of one training step through the trainer's own phases, after a warm-up step
    that allocates the AdamW state."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed._tools.mem_tracker import MemTracker

    trainer.forward_backward(t)
    trainer.optimizer_step(t, need_norm=True)
    if fsdp:
        tracker = FSDPMemTracker(t.model, t.optimizer)
    else:
        tracker = MemTracker()
        tracker.track_external(t.model, t.optimizer)
    with tracker:
        trainer.forward_backward(t)
        trainer.optimizer_step(t, need_norm=True)
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        trainer.forward_backward(t)
    t.optimizer.zero_grad(set_to_none=True)
    return peak, counter.get_total_flops()
