"""CKKS-encrypted aggregation with TenSEAL (Microsoft SEAL's CKKS): sites encrypt their updates under a shared
public key; the server multiplies each ciphertext by its plaintext FedAvg weight and adds them (and its DP noise, in
plaintext) without the secret key; sites decrypt the sum.

Parameters (`CkksParams`), chosen for the updates this carries:
- poly modulus degree 8192: 4096 values per ciphertext. A LoRA r=8 update of SmolLM2-135M (all projections) is
  4.9 M values, 1 200 ciphertexts; a larger degree packs more values per ciphertext but each costs proportionally
  more, so bytes per value stay ~57 (fresh) and ~32 (after the server's rescale).
- coefficient moduli 60 + 40 + 60 = 160 bits: 128-bit security by the HomomorphicEncryption.org standard, which
  SEAL enforces (8192 allows at most 218 bits at 128-bit security). The middle 40-bit prime is the one rescale of
  the plaintext-weight multiply: multiplicative depth 1 is all a weighted sum needs, and the accumulated update
  stays at that level round after round (additions consume no level).
- scale 2^40: the encoding error is ~2^-40·‖·‖ per value; measured on real LoRA deltas, the decrypted mean differs
  from the float64 FedAvg by 1.8e-6 relative (2.4 M values; tests/federated/test_crypto.py; the issue asks ≤ 1e-4).

The server's context holds the public key only (no secret, relinearisation or Galois keys: it needs none);
TenSEAL itself refuses to decrypt with it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from megalang.errors import UserError
from megalang.store.files import sha256_file, staging_dir

SECRET, PUBLIC, INFO = "secret.ctx", "public.ctx", "context.json"


class BadCiphertext(ValueError):
    """Bytes that are not a CKKS ciphertext of this context (the server rejects the update with this reason)."""


@dataclass(frozen=True)
class CkksParams:
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = 40

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def security_bits(self) -> int:
        """128 while the total modulus stays within the standard's bound for this degree (SEAL checks it too)."""
        bound = {4096: 109, 8192: 218, 16384: 438, 32768: 881}[self.poly_modulus_degree]
        return 128 if sum(self.coeff_mod_bit_sizes) <= bound else 0


@dataclass
class Context:
    """A loaded TenSEAL context and what it can do."""

    ctx: Any
    path: str
    has_secret: bool
    sha256: str


def keygen(out: Path, params: CkksParams = CkksParams()) -> None:
    """OUT/secret.ctx (the secret and public keys: sites only, mode 0600), OUT/public.ctx (the public key only: the
    server), OUT/context.json (parameters, security level, the public context's SHA-256)."""
    import tenseal as ts

    if out.exists():
        raise UserError(f"{out} exists: keys are never overwritten (sites hold the secret key); choose a new folder")
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
    ctx.global_scale = 2 ** params.scale_bits
    with staging_dir(out) as tmp:
        secret = tmp / SECRET
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                  save_relin_keys=False))
        public = ctx.copy()
        public.make_context_public()
        (tmp / PUBLIC).write_bytes(public.serialize(save_public_key=True, save_secret_key=False,
                                                    save_galois_keys=False, save_relin_keys=False))
        info = {**asdict(params), "scheme": "CKKS", "library": f"tenseal {ts.__version__}", "slots": params.slots,
                "security_bits": params.security_bits, "public_sha256": sha256_file(tmp / PUBLIC)}
        (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def load_context(path: str | os.PathLike) -> Context:
    import tenseal as ts

    path = Path(path)
    if not path.is_file():
        raise UserError(f"federated.context: {path} does not exist; make the keys with "
                        "`megalang federated keygen KEYS`")
    data = path.read_bytes()
    try:
        ctx = ts.context_from(data)
    except Exception:  # TenSEAL raises bare ValueError/RuntimeError on anything it cannot parse
        raise UserError(f"federated.context: {path} is not a TenSEAL CKKS context (empty, damaged or another file); "
                        "use secret.ctx or public.ctx from `megalang federated keygen`") from None
    return Context(ctx, str(path), ctx.is_private(), sha256_file(path))


def _vector(context: Context, chunk: bytes):
    import tenseal as ts

    try:
        return ts.ckks_vector_from(context.ctx, chunk)
    except Exception as e:
        raise BadCiphertext(f"{type(e).__name__}: {str(e)[:120]}") from None


def encrypt(context: Context, flat: np.ndarray) -> list[bytes]:
    """The serialized ciphertexts of `flat`, `slots` values each."""
    import tenseal as ts

    slots = CkksParams().slots
    values = np.asarray(flat, dtype=np.float64).ravel()
    return [ts.ckks_vector(context.ctx, values[i:i + slots].tolist()).serialize()
            for i in range(0, values.size, slots)]


def vectors(context: Context, chunks: list[bytes]) -> list[Any]:
    """The ciphertexts deserialized (BadCiphertext if one is not); `weighted_sum` takes these or bytes."""
    return [_vector(context, chunk) for chunk in chunks]


def chunk_sizes(context: Context, chunks: list[bytes]) -> list[int]:
    """How many values each ciphertext holds: what the server can check without the secret key."""
    return [v.size() for v in vectors(context, chunks)]


def weighted_sum(context: Context, updates: list[list], weights: list[float], base: list[bytes] | None = None,
                 noise: np.ndarray | None = None) -> list[bytes]:
    """Σ weights[k]·updates[k] (+ base, an earlier result) (+ noise, in plaintext), ciphertext by ciphertext, with
    whatever context is given (the server's holds no secret key). Updates: serialized ciphertexts or `vectors`."""
    slots = CkksParams().slots
    out = []
    for i in range(len(updates[0])):
        total = None
        for update, weight in zip(updates, weights):
            vector = update[i] if not isinstance(update[i], bytes) else _vector(context, update[i])
            term = vector * float(weight)
            total = term if total is None else total + term
        if base is not None:
            total = total + _vector(context, base[i])
        if noise is not None:
            total = total + np.asarray(noise[i * slots:i * slots + total.size()], dtype=np.float64).tolist()
        out.append(total.serialize())
    return out


def decrypt(context: Context, chunks: list[bytes], size: int) -> np.ndarray:
    """The float64 vector of `size` values the ciphertexts hold (a site's secret context only)."""
    if not context.has_secret:
        raise UserError(f"{context.path} holds no secret key: decrypt at a site with secret.ctx; the server cannot")
    values = [np.asarray(_vector(context, chunk).decrypt(), dtype=np.float64) for chunk in chunks]
    flat = np.concatenate(values) if values else np.zeros(0)
    if flat.size != size:
        raise UserError(f"the ciphertexts hold {flat.size} values, this site trains {size}: the server and the site "
                        "run different recipes (lora.*, model.*)")
    return flat
