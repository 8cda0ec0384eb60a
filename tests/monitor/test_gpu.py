"""monitor/gpu.py and the guard's wiring in monitor/live.py, driven by a fake NVML (no GPU needed)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from prometheus_client import generate_latest

from megalang.config import MetricsConfig
from megalang.monitor.gpu import NvmlSampler, ThermalGuard, open_nvml_sampler
from megalang.monitor.live import RunMonitor
from megalang.monitor.prometheus import PrometheusBackend

HW_THERMAL, GPU_IDLE, SW_POWER_CAP = 0x40, 0x1, 0x4


class FakeNvml:
    """The pynvml calls NvmlSampler makes, replaying scripted temperatures and throttle reasons."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, temps, reasons=None, fail_init=False):
        self.temps, self.reasons = list(temps), list(reasons or [0] * len(temps))
        self.fail_init, self.calls = fail_init, 0

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByUUID(self, uuid):
        raise RuntimeError("not found")

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=60 << 30, total=80 << 30)

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        self.calls += 1
        return self.temps[min(self.calls - 1, len(self.temps) - 1)]

    def nvmlDeviceGetPowerUsage(self, h):
        return 412_500  # milliwatts

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self.reasons[min(self.calls, len(self.reasons) - 1)]


def sampler(temps, reasons=None) -> NvmlSampler:
    nvml = FakeNvml(temps, reasons)
    return NvmlSampler(nvml, nvml.nvmlDeviceGetHandleByIndex(0))


def test_sampler_reads_every_field_in_plain_units():
    s = sampler([71], [HW_THERMAL]).sample()
    assert s == {"gpu_util": 97, "gpu_memory_bytes": 60 << 30, "gpu_temp_c": 71, "gpu_power_w": 412.5,
                 "gpu_throttle_reasons": HW_THERMAL, "gpu_throttled": 1}
    assert sampler([71], [GPU_IDLE]).sample()["gpu_throttled"] == 0  # idle clocks are not a heat/power limit


def test_power_cap_alone_is_a_healthy_busy_gpu_not_throttling():
    # Every GPU at full load holds its power limit by lowering clocks (SwPowerCap); only the raw mask shows it.
    s = sampler([71], [SW_POWER_CAP | GPU_IDLE]).sample()
    assert s["gpu_throttle_reasons"] == SW_POWER_CAP | GPU_IDLE and s["gpu_throttled"] == 0
    assert sampler([71], [SW_POWER_CAP | HW_THERMAL]).sample()["gpu_throttled"] == 1


def run_guard(reasons: list[int]) -> tuple[list[float], list[str], RunMonitor]:
    """Six logged steps at 70 °C with these throttle reasons, a 2-sample guard that pauses 1.5 s."""
    slept, warnings = [], []
    cfg = MetricsConfig(guard_temp_c=85, guard_samples=2, guard_pause_s=1.5, system=False)
    monitor = RunMonitor(cfg, torch.device("cpu"), nvml=sampler([70] * 12, reasons), warn=warnings.append,
                         sleep=slept.append)
    for _ in range(6):
        monitor.sample()
        monitor.after_step()
    return slept, warnings, monitor


def test_guard_neither_warns_nor_pauses_on_power_cap_alone_but_does_on_thermal_slowdown():
    slept, warnings, monitor = run_guard([SW_POWER_CAP] * 12)
    assert slept == [] and warnings == [] and monitor.guard.trips == 0
    slept, warnings, monitor = run_guard([HW_THERMAL] * 12)
    assert slept and monitor.guard.trips == 1
    assert len(warnings) == 1 and "clocks throttled (hw_thermal)" in warnings[0] and "pausing 1.5 s" in warnings[0]


def test_guard_trips_after_n_consecutive_hot_samples_and_recovers():
    warnings = []
    guard = ThermalGuard(temp_c=85, samples=3, warn=warnings.append)
    temps = [80, 86, 90, 70, 86, 88, 91, 92, 60]
    tripped = [guard.update({"gpu_temp_c": t}) for t in temps]
    # A cool sample (70) resets the streak; the third hot sample in a row trips it; 60 clears it.
    assert tripped == [False, False, False, False, False, False, True, True, False]
    assert guard.trips == 1
    assert len(warnings) == 2 and "91 °C" in warnings[0] and "back under" in warnings[1]


def test_guard_counts_thermal_throttling_even_below_the_temperature_limit():
    guard = ThermalGuard(temp_c=95, samples=2, warn=lambda m: None)
    assert not guard.update({"gpu_temp_c": 70, "gpu_throttle_reasons": HW_THERMAL})
    assert guard.update({"gpu_temp_c": 70, "gpu_throttle_reasons": HW_THERMAL})
    ignoring = ThermalGuard(temp_c=95, samples=1, throttle=False, warn=lambda m: None)
    assert not ignoring.update({"gpu_temp_c": 70, "gpu_throttle_reasons": HW_THERMAL})


def test_monitor_pauses_between_steps_while_tripped_and_exposes_it():
    slept, warnings = [], []
    cfg = MetricsConfig(guard_temp_c=85, guard_samples=2, guard_pause_s=1.5, system=False)
    prom = PrometheusBackend(0)
    try:
        monitor = RunMonitor(cfg, torch.device("cpu"), backends=[prom], nvml=sampler([90, 91, 92, 70]),
                             warn=warnings.append, sleep=slept.append)
        first = monitor.sample()  # 90: hot once
        assert first["guard_tripped"] == 0 and monitor.after_step() == 0.0 and slept == []
        second = monitor.sample()  # 91: hot twice, tripped
        assert second["guard_tripped"] == 1 and second["gpu_temp_c"] == 91
        prom.write(2, second)
        assert b"megalang_thermal_guard_tripped 1.0" in generate_latest(prom.registry)
        monitor.after_step()  # pauses, then re-samples (92): still tripped
        monitor.after_step()  # pauses, re-samples (70): cleared
        assert slept == [1.5, 1.5] and not monitor.guard.tripped and monitor.guard.pauses == 2
        monitor.after_step()
        assert slept == [1.5, 1.5]  # no pause once cool
    finally:
        prom.close()
    assert any("pausing 1.5 s" in w for w in warnings) and any("prometheus: serving" in w for w in warnings)


def test_no_sampler_without_nvml_or_on_cpu():
    assert open_nvml_sampler(torch.device("cpu"), FakeNvml([50])) is None
    assert open_nvml_sampler(torch.device("cuda", 0), FakeNvml([50], fail_init=True)) is None
    found = open_nvml_sampler(torch.device("cuda", 0), FakeNvml([50]))
    assert found is not None and found.sample()["gpu_temp_c"] == 50
