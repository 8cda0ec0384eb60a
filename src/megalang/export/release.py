"""What every export adds to its folder besides the model: README.md (model card), DATASHEET.md, bom.cdx.json
before the manifest, and with `--sign KEY` model.sig after it. All of it is written inside the staging folder,
so a failure anywhere leaves neither OUT nor OUT.tmp."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megalang.export.sign import check_private_key, sign_folder
from megalang.store.manifest import MANIFEST, hash_files, library_versions


@dataclass(frozen=True)
class Release:
    out: Path
    fmt: str
    quant: str | None
    sign_key: Path | None

    @classmethod
    def prepare(cls, out: str | Path, fmt: str, quant: str | None, sign: str | Path | None) -> Release:
        """Checks the signing key first: a missing or unusable key fails before any model is read."""
        return cls(Path(out), fmt, quant, check_private_key(sign) if sign is not None else None)

    def describe(self, dest: Path, model, origin: Path, origin_kind: str, run_config: Any | None, step: int | None,
                 tokenizer_json: Path | None, fmt: str | None = None) -> dict[str, dict[str, Any]]:
        """Write the model card, the datasheet and the ML-BOM into the staging folder `dest`; returns the hashes
        of the files the BOM lists, which the manifest takes instead of reading the weights again."""
        from megalang.export.bom import BOM, write_bom
        from megalang.export.card import write_card
        from megalang.export.facts import gather_facts

        facts = gather_facts(self.out.name, fmt or self.fmt, self.quant, model, origin, origin_kind, run_config, step,
                             tokenizer_json, library_versions())
        facts.signed = self.sign_key is not None
        write_card(facts, dest)
        files = hash_files(dest, exclude=(MANIFEST, BOM))
        write_bom(facts, dest, files)
        return files

    def describe_source(self, dest: Path, source) -> dict[str, dict[str, Any]]:
        """`describe` for an export/source.py `Source`."""
        return self.describe(dest, source.model, source.path, source.kind, source.run_config, source.step,
                             source.tokenizer_files.get("tokenizer.json"))

    def seal(self, dest: Path) -> None:
        """After the manifest: sign the folder when a key was given."""
        if self.sign_key is not None:
            sign_folder(dest, self.sign_key)
