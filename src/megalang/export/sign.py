"""Signing a release folder and checking its signature, with the `model-signing` library (OpenSSF Model Signing):
an elliptic-curve private key in PEM signs every file's SHA-256 (a Sigstore bundle, DSSE envelope, no
transparency log and no network); `model.sig` is the signature. Verification names each file that differs
from what was signed (model-signing's own message lists digests as bytes)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from megalang.errors import UserError
from megalang.store.files import sha256_files

SIGNATURE = "model.sig"
KEY_HELP = ("make a key pair with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem && "
            "openssl ec -in key.pem -pubout -out pub.pem` (docs/export.md)")
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing's elliptic-key signer accepts


def require_model_signing(option: str) -> None:
    import importlib.util

    if importlib.util.find_spec("model_signing") is None:
        raise UserError(f"{option}: signing needs the model-signing library; pip install 'megalang[release]'")


def _hashing_config():
    from model_signing import hashing

    # Git files are covered too: a release folder is not a repository, and everything in it is the release.
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def check_private_key(key: str | Path, option: str = "--sign") -> Path:
    """The key file, refused in one line when it is missing or not an unencrypted EC private key in PEM: checked
    before an export starts, so a bad key costs no work and leaves nothing behind."""
    require_model_signing(option)
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    path = Path(key)
    if not path.is_file():
        raise UserError(f"{option} {path}: no such key file; {KEY_HELP}")
    try:
        private = load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:
        raise UserError(f"{option} {path}: the key is encrypted; sign with an unencrypted PEM key") from None
    except (ValueError, OSError) as e:
        raise UserError(f"{option} {path}: not a PEM private key ({e}); {KEY_HELP}") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name not in _CURVES:
        raise UserError(f"{option} {path}: not an elliptic-curve key on P-256/P-384/P-521; {KEY_HELP}")
    return path


def check_public_key(key: str | Path, option: str = "--key") -> Path:
    require_model_signing(option)
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    path = Path(key)
    if not path.is_file():
        raise UserError(f"{option} {path}: no such public key file; pass the pub.pem of the signing key")
    try:
        load_pem_public_key(path.read_bytes())
    except (ValueError, OSError) as e:
        raise UserError(f"{option} {path}: not a PEM public key ({e}); `openssl ec -in key.pem -pubout -out pub.pem` "
                        "makes one from the signing key") from None
    return path


def sign_folder(folder: Path, key: Path) -> Path:
    """Sign every file of `folder` (the manifest included) into `folder/model.sig`."""
    from model_signing import signing

    signature = folder / SIGNATURE
    signing.Config().set_hashing_config(_hashing_config()).use_elliptic_key_signer(private_key=key).sign(folder, signature)
    return signature


def verify_signature(folder: str | Path, public_key: str | Path) -> dict[str, str]:
    """{path: what is wrong} (empty when the signature verifies and every file matches it)."""
    from model_signing import verifying

    folder, key = Path(folder), check_public_key(public_key)
    signature = folder / SIGNATURE
    if not signature.is_file():
        return {str(signature): "missing; the folder was not signed (megalang export --sign KEY)"}
    try:
        verifying.Config().use_elliptic_key_verifier(public_key=key).set_hashing_config(_hashing_config()) \
            .verify(folder, signature)
        return {}
    except Exception as e:  # any failure to verify an untrusted file is a verdict, not a crash
        message = str(e) or type(e).__name__
    if not message.startswith("Signature mismatch"):  # the signature itself: another key, or altered
        return {str(signature): f"does not verify with {key} (signed with another key, or the signature was "
                                f"altered): {message.splitlines()[0]}"}
    return file_differences(folder, signature) or {str(signature): message}


def signed_digests(signature: Path) -> dict[str, str] | None:
    """{relative path: SHA-256} from the signature's in-toto statement (model-signing's v1.0 predicate); only read
    after model-signing has checked the envelope's signature."""
    try:
        bundle = json.loads(signature.read_text(encoding="utf-8"))
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        resources = statement["predicate"]["resources"]
        return {r["name"]: r["digest"] for r in resources if r.get("algorithm") == "sha256"}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def file_differences(folder: Path, signature: Path) -> dict[str, str]:
    """One entry per file that differs from the signed one: changed, missing or added after signing."""
    signed = signed_digests(signature)
    if signed is None:
        return {}
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p != signature)
    actual = dict(zip(present, sha256_files([folder / rel for rel in present])))
    out = {}
    for rel in sorted(set(signed) | set(actual)):
        path = str(folder / rel)
        if rel not in actual:
            out[path] = "missing; it was signed"
        elif rel not in signed:
            out[path] = "not covered by the signature (added after signing)"
        elif actual[rel] != signed[rel]:
            out[path] = "changed since signing (SHA-256 differs from the signed one)"
    return out
