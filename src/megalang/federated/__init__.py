"""Federated fine-tuning across organisations: Flower rounds, CKKS-encrypted aggregation, client-level DP."""

import os

# Flower sends usage telemetry unless told not to; it reads this when first imported, which is always after here.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
