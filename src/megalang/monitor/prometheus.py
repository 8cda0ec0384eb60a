"""A Prometheus endpoint for a run: the sink's records as `megalang_*` gauges, served by prometheus_client.

Bound to 127.0.0.1 unless `metrics.host` says otherwise; port 0 takes any free port (read `.port`).
"""

from __future__ import annotations

from typing import Any

# record key → (metric name, help). Keys missing from a record leave the gauge at its last value.
GAUGES: dict[str, tuple[str, str]] = {
    "step": ("megalang_step", "optimizer steps completed"),
    "loss": ("megalang_loss", "training loss (token-mean cross-entropy) at the last logged step"),
    "val_loss": ("megalang_val_loss", "validation loss at the last evaluation"),
    "lr": ("megalang_lr", "learning rate"),
    "grad_norm": ("megalang_grad_norm", "global gradient norm before clipping"),
    "tokens_per_s": ("megalang_tokens_per_second", "training tokens per second over the last log interval"),
    "tokens": ("megalang_tokens_seen", "training tokens consumed since the run started"),
    "mfu": ("megalang_mfu", "model FLOPs utilisation (0..1) against the device's peak"),
    "step_time": ("megalang_step_time_seconds", "seconds per optimizer step over the last log interval"),
    "data_wait_s": ("megalang_data_wait_seconds", "seconds per step spent waiting for the next batch"),
    "checkpoint_s": ("megalang_checkpoint_seconds", "seconds the last checkpoint save blocked training"),
    "peak_memory_bytes": ("megalang_peak_memory_bytes", "peak device memory (CUDA allocator) or peak RSS (CPU)"),
    "cpu_percent": ("megalang_cpu_utilization_percent", "this process's CPU use since the last sample (100 = one core)"),
    "rss_bytes": ("megalang_rss_bytes", "resident memory of the training process"),
    "gpu_util": ("megalang_gpu_utilization_percent", "NVML: percent of time a kernel ran"),
    "gpu_memory_bytes": ("megalang_gpu_memory_used_bytes", "NVML: device memory in use (all processes)"),
    "gpu_temp_c": ("megalang_gpu_temperature_celsius", "NVML: GPU core temperature"),
    "gpu_power_w": ("megalang_gpu_power_watts", "NVML: board power draw"),
    "gpu_throttle_reasons": ("megalang_gpu_throttle_reasons", "NVML: clock throttle/event reason bitmask"),
    "gpu_throttled": ("megalang_gpu_thermal_power_throttled", "1 while clocks are cut for heat or power trouble (not the power cap alone)"),
    "guard_tripped": ("megalang_thermal_guard_tripped", "1 while the thermal/power guard is tripped"),
    "guard_pauses": ("megalang_thermal_guard_pauses", "pauses the guard has taken between steps"),
}


class PrometheusBackend:
    """Gauges in a private registry (two runs in one process do not collide) behind an HTTP server thread."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.gauges = {key: Gauge(name, doc, registry=self.registry) for key, (name, doc) in GAUGES.items()}
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            from megalang.errors import UserError

            raise UserError(f"metrics.port={port}: cannot serve Prometheus on {host}:{port} ({e.strerror}); "
                            "pick a free port or metrics.port=0") from None
        self.host, self.port = host, self._server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def write(self, step: int, values: dict[str, Any]) -> None:
        for key, gauge in self.gauges.items():
            value = values.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                gauge.set(value)
            elif isinstance(value, bool):
                gauge.set(int(value))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
