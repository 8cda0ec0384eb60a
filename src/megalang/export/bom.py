"""bom.cdx.json: a CycloneDX 1.6 ML bill of materials of a release, through cyclonedx-python-lib. The model is a
`machine-learning-model` component holding every exported file (SHA-256); the prepared sets, token shards,
tokenizers and raw input files are `data` components (raw files by their SHA-256, artifacts by their manifest's);
the libraries that trained and wrote the model are `library` components with package URLs; the dependency graph
follows the lineage. cyclonedx-python-lib does not model `modelCard` yet (a TODO in its Component), so the
model card's basics are added to the serialised JSON, and the whole document is checked against the CycloneDX
1.6 JSON schema with the library's own validator before it is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from megalang.export.facts import Artifact, ReleaseFacts
from megalang.store.files import write_text_atomic

BOM = "bom.cdx.json"
MODEL_REF = "model"


def sha256(hex_digest: str):
    from cyclonedx.model import HashAlgorithm, HashType

    return HashType(alg=HashAlgorithm.SHA_256, content=hex_digest)


def props(**values: Any):
    from cyclonedx.model import Property

    return [Property(name=f"megalang:{k}", value=str(v)) for k, v in values.items() if v is not None]


def library_purl(name: str, version: str):
    from packageurl import PackageURL

    if name == "python":
        return PackageURL(type="generic", name="cpython", version=version)
    return PackageURL(type="pypi", name=name.lower(), version=version)


def build_bom(facts: ReleaseFacts, files: dict[str, dict[str, Any]]) -> str:
    """The BOM as validated JSON text. `files`: {relative path: size and SHA-256} of the release's files."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    file_parts = [Component(type=ComponentType.FILE, name=rel, bom_ref=f"file:{rel}", hashes=[sha256(info["sha256"])],
                            properties=props(size=info["size"])) for rel, info in sorted(files.items())]
    model = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=facts.name, bom_ref=MODEL_REF,
        version=f"step-{facts.step}" if facts.step is not None else None,
        description=f"{facts.architecture or 'causal language model'}, {facts.params:,} parameters, "
                    f"exported by megalang as {facts.fmt}" + (f" ({facts.quant})" if facts.quant else ""),
        components=file_parts,
        properties=props(format=facts.fmt, quant=facts.quant, params=facts.params, origin=facts.origin,
                         base_model=facts.base_model, tokens_seen=facts.summary.get("tokens_seen"),
                         epsilon=facts.epsilon()[0]),
    )
    bom = Bom()
    bom.metadata.component = model
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="megalang",
                                                version=facts.libraries.get("megalang")))
    datasets = dataset_components(facts)
    for c in datasets.values():
        bom.components.add(c)
    libraries = [Component(type=ComponentType.LIBRARY, name=n, version=v, bom_ref=f"lib:{n}", purl=library_purl(n, v))
                 for n, v in sorted(facts.libraries.items())]
    for c in libraries:
        bom.components.add(c)
    base = str(Path(facts.base_model).resolve()) if facts.base_model else None
    roots = [datasets[a.path] for a in facts.chain if (a.depth == 0 or a.path == base) and a.path in datasets]
    bom.register_dependency(model, [*file_parts, *roots, *libraries])
    for a in facts.chain:
        if a.path in datasets:
            bom.register_dependency(datasets[a.path], [datasets[p] for p in input_paths(a) if p in datasets])
    document = json.loads(JsonV1Dot6(bom).output_as_string())
    document["metadata"]["component"]["modelCard"] = model_card(facts, [c.bom_ref.value for c in datasets.values()
                                                                           if c.type == ComponentType.DATA])
    text = json.dumps(document, indent=2)
    check_schema(text)
    return text


def dataset_components(facts: ReleaseFacts) -> dict[str, Any]:
    """{path: component} of every artifact in the lineage and every raw file the prepared sets read."""
    from cyclonedx.model.component import Component, ComponentType

    out: dict[str, Any] = {}
    for a in facts.chain:
        status = "missing" if a.missing else ("changed" if a.changed else None)
        kind = ComponentType.MACHINE_LEARNING_MODEL if a.stage in ("train", "export") else ComponentType.DATA
        out[a.path] = Component(
            type=kind, name=a.name, bom_ref=f"artifact:{a.path}",
            description=f"megalang {a.stage} artifact at {a.path} (hash: its manifest.json)",
            hashes=[sha256(a.manifest_sha256)] if a.manifest_sha256 else None,
            properties=props(stage=a.stage, status=status, **{f"count.{k}": v for k, v in flat_counts(a).items()}),
        )
        for raw in a.raw_inputs():
            if raw.get("path") not in out and raw.get("sha256"):
                out[raw["path"]] = Component(
                    type=ComponentType.DATA, name=Path(raw["path"]).name, bom_ref=f"raw:{raw['path']}",
                    description=f"raw input file {raw['path']}", hashes=[sha256(raw["sha256"])],
                    properties=props(size=raw.get("size")))
    return out


def flat_counts(a: Artifact) -> dict[str, Any]:
    return {k: v for k, v in a.counts.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def input_paths(a: Artifact) -> list[str]:
    return [str(Path(i["path"]).resolve()) if i.get("kind") == "artifact" else i.get("path")
            for i in (a.manifest or {}).get("inputs", [])]


def model_card(facts: ReleaseFacts, dataset_refs: list[str]) -> dict[str, Any]:
    """CycloneDX `modelCard`: approach, task, architecture, datasets (by reference), metrics, considerations."""
    from megalang.export.card import INTENDED_USE, LIMITATIONS

    sft = bool(((facts.run_config or {}).get("data") or {}).get("sft"))
    card: dict[str, Any] = {
        "modelParameters": {
            "approach": {"type": "supervised" if sft else "self-supervised"},
            "task": "text-generation",
            "architectureFamily": "transformer",
            "modelArchitecture": facts.architecture or facts.shape.get("model_type") or "causal language model",
            "datasets": [{"ref": ref} for ref in dataset_refs],
            "inputs": [{"format": "text"}],
            "outputs": [{"format": "text"}],
        },
        "considerations": {"useCases": [INTENDED_USE], "technicalLimitations": [LIMITATIONS]},
    }
    metrics = [{"type": k, "value": f"{v:.6g}"} for k, v in facts.evaluation().items()]
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    return card


def check_schema(text: str) -> None:
    """The library's strict validator against the CycloneDX 1.6 JSON schema (its json-validation extra is a core
    dependency); a failure is a bug here."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise RuntimeError(f"bom.cdx.json does not validate against CycloneDX 1.6: {error}")


def write_bom(facts: ReleaseFacts, dest: Path, files: dict[str, dict[str, Any]]) -> None:
    write_text_atomic(dest / BOM, build_bom(facts, files) + "\n")
