"""Config of federated fine-tuning (`megalang federated …`): the `federated:` section of a run recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from megalang.config.base import Section


class FederatedConfig(Section):
    """Rounds of local training at each site, aggregated by a Flower server (docs/federated.md)."""

    address: str = Field("127.0.0.1:9092", description="HOST:PORT the server listens on and the clients dial "
                         "(loopback by default; set a network address only to federate across machines)")
    tls_ca: str | None = Field(None, description="PEM CA certificate: the server's certificate must chain to it "
                               "(sites verify it; set on the server and every site to encrypt the gRPC channel)")
    tls_cert: str | None = Field(None, description="server: its PEM certificate (for the host in federated.address)")
    tls_key: str | None = Field(None, description="server: the PEM private key of tls_cert")
    rounds: int = Field(3, ge=1, description="federated rounds (each: local steps at every site, then aggregation)")
    local_steps: int = Field(10, ge=1, description="optimizer steps each site takes per round")
    min_clients: int = Field(2, ge=1, description="sites a round waits for, and the answers it needs to complete")
    round_timeout_s: float = Field(600.0, gt=0, description="a site that has not answered by then is dropped from "
                                   "the round")
    evaluate_every: int = Field(0, ge=0, description="rounds between federated evaluations: the sites adopt the "
                                "global weights, checkpoint them and score their held-out split (0 = only after the "
                                "last round; each one sends the global weights to every site once more)")
    strategy: Literal["fedavg", "fedprox"] = Field("fedavg", description="fedavg, or fedprox (a proximal term "
                                                   "pulls local weights toward the global ones)")
    proximal_mu: float = Field(0.01, ge=0, description="strategy=fedprox: weight μ of the proximal term μ/2·‖w−w_g‖²")
    weighting: Literal["examples", "uniform"] = Field("examples", description="FedAvg weights: each site's training "
                                                      "examples, or equal (dp_noise > 0 needs uniform)")
    encryption: Literal["none", "ckks"] = Field("none", description="ckks: sites send CKKS ciphertexts (TenSEAL); the "
                                                "server adds them without the secret key")
    context: str | None = Field(None, description="encryption=ckks: the `megalang federated keygen` folder, or the "
                                "server's public.ctx / a site's secret.ctx in it")
    dp_clip: float = Field(0.0, ge=0, description="client-level DP: each site clips its update to this L2 norm "
                           "(0 = no clipping)")
    dp_noise: float = Field(0.0, ge=0, description="client-level DP: Gaussian noise multiplier z; the server adds "
                            "N(0, (z·dp_clip/K)²) to the mean of K updates (0 = no noise)")
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="δ of the (ε, δ) the server's accountant reports")
    dp_sites: int | None = Field(None, ge=1, description="client-level DP: the population of sites rounds sample "
                                 "from (default: the sites of each round, sample rate 1)")
    site: str | None = Field(None, description="client: this site's name (its run folder is run.dir/site-NAME)")
    site_data: list[str] = Field(default_factory=list, description="simulate: data.sft (or data.shards) of each site, "
                                 "one per client; unset: data.sft's lines dealt round-robin")
    clients: int | None = Field(None, ge=1, description="sites expected: the first round waits up to round_timeout_s "
                                "for them (then starts with min_clients); simulate starts this many (default: "
                                "len(site_data))")

    @field_validator("site", mode="before")
    @classmethod
    def _site_name(cls, value):
        """`site=0` on the command line is a number to YAML: a whole number names the site as well."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            return str(int(value))
        return value

    @model_validator(mode="after")
    def _check(self) -> FederatedConfig:
        if self.dp_noise > 0 and self.dp_clip == 0:
            raise ValueError("federated.dp_noise needs federated.dp_clip > 0 (the noise is calibrated to the clip "
                             "norm)")
        if self.dp_noise > 0 and self.weighting != "uniform":
            raise ValueError("federated.dp_noise > 0 needs federated.weighting=uniform (weights by example counts "
                             "would let one site's update exceed the calibrated sensitivity)")
        if self.site is not None and not self.site.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"federated.site={self.site!r}: use letters, digits, - and _ only (it names a folder)")
        return self
