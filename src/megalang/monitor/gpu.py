"""NVIDIA GPU telemetry through NVML (nvidia-ml-py) and the thermal/power guard that watches it.

NVML is passed in (the `pynvml` module by default) so tests drive the guard with a fake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# Clock event ("throttle") reasons that mean heat or power trouble, not idling or application clocks.
# Values are NVML's (nvml.h): HwSlowdown 0x8, SwThermalSlowdown 0x20, HwThermalSlowdown 0x40,
# HwPowerBrakeSlowdown 0x80. SwPowerCap (0x4) is left out: the driver holds every busy GPU at its power
# limit by lowering clocks, so a healthy H100 at full load reports it nearly all the time.
THERMAL_POWER_REASONS = {"hw_slowdown": 0x8, "sw_thermal": 0x20, "hw_thermal": 0x40, "hw_power_brake": 0x80}
THERMAL_POWER_MASK = sum(THERMAL_POWER_REASONS.values())


def throttle_names(mask: int) -> list[str]:
    return [name for name, bit in THERMAL_POWER_REASONS.items() if mask & bit]


class NvmlSampler:
    """Utilisation, memory, temperature, power and clock-throttle reasons of one GPU."""

    def __init__(self, nvml: Any, handle: Any):
        self.nvml, self.handle = nvml, handle

    def sample(self) -> dict[str, Any]:
        n, h = self.nvml, self.handle
        reasons_fn = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or n.nvmlDeviceGetCurrentClocksThrottleReasons
        reasons = int(reasons_fn(h))
        return {
            "gpu_util": n.nvmlDeviceGetUtilizationRates(h).gpu,
            "gpu_memory_bytes": n.nvmlDeviceGetMemoryInfo(h).used,
            "gpu_temp_c": n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
            "gpu_power_w": n.nvmlDeviceGetPowerUsage(h) / 1000.0,  # NVML reports milliwatts
            "gpu_throttle_reasons": reasons,
            "gpu_throttled": int(bool(reasons & THERMAL_POWER_MASK)),
        }


def open_nvml_sampler(device, nvml: Any = None) -> NvmlSampler | None:
    """A sampler for the torch CUDA `device`, or None where NVML is missing (no driver, not NVIDIA, CPU run).

    Matched by UUID: CUDA_VISIBLE_DEVICES renumbers CUDA devices, NVML indices never change.
    """
    if getattr(device, "type", "cpu") != "cuda":
        return None
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None
    try:
        nvml.nvmlInit()
        handle = None
        try:
            import torch

            uuid = str(torch.cuda.get_device_properties(device).uuid)
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception:  # older torch without .uuid, or a UUID format NVML does not accept
            handle = nvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return NvmlSampler(nvml, handle)
    except Exception:  # NVMLError: driver not loaded, insufficient permissions, MIG without access
        return None


@dataclass
class ThermalGuard:
    """Trips after `samples` consecutive hot samples (temperature ≥ limit, or thermal/power throttling when
    `throttle`); warns once per trip, and asks for a pause between steps while tripped if `pause_s` > 0."""

    temp_c: float = 85.0
    throttle: bool = True
    samples: int = 3
    pause_s: float = 0.0
    warn: Callable[[str], None] = print
    streak: int = 0
    tripped: bool = False
    trips: int = 0
    pauses: int = 0

    def is_hot(self, sample: dict[str, Any]) -> str | None:
        """Why this sample is over the limit, or None."""
        temp = sample.get("gpu_temp_c")
        if temp is not None and temp >= self.temp_c:
            return f"temperature {temp:.0f} °C ≥ {self.temp_c:g} °C"
        reasons = int(sample.get("gpu_throttle_reasons") or 0) & THERMAL_POWER_MASK
        if self.throttle and reasons:
            return "clocks throttled (" + ", ".join(throttle_names(reasons)) + ")"
        return None

    def update(self, sample: dict[str, Any]) -> bool:
        why = self.is_hot(sample)
        self.streak = self.streak + 1 if why else 0
        if why and self.streak >= self.samples and not self.tripped:
            self.tripped, self.trips = True, self.trips + 1
            action = f"pausing {self.pause_s:g} s between steps" if self.pause_s else "not pausing (metrics.guard_pause_s=0)"
            self.warn(f"thermal guard: {why} for {self.streak} samples; {action}")
        elif not why and self.tripped:
            self.tripped = False
            self.warn("thermal guard: back under the limit")
        return self.tripped

    def values(self) -> dict[str, Any]:
        return {"guard_tripped": int(self.tripped), "guard_pauses": self.pauses}
