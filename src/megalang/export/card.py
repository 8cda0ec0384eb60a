"""README.md, the model card of a release (huggingface_hub `ModelCard`: YAML metadata the Hub reads, with the
eval results as model-index), and DATASHEET.md, a datasheet of the corpus (Gebru et al., "Datasheets for
Datasets") answered from the manifests. Both are written from export/facts.py `ReleaseFacts` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from megalang.export.facts import Artifact, ReleaseFacts

CARD = "README.md"
DATASHEET = "DATASHEET.md"
NOT_RECORDED = "not recorded"
LIBRARY_NAMES = {"hf": "transformers", "peft": "peft", "gguf": "gguf", "onnx": "onnx"}

INTENDED_USE = (
    "Research and experimentation: studying how the data, tokenizer and training settings recorded on this card "
    "shape a language model, and continuing text of the kinds it was trained on. It can be a starting point "
    "for fine-tuning on a task the user has evaluated it for.")
LIMITATIONS = (
    "The model continues text; it does not know facts and will state false things fluently. It was trained only "
    "on the corpus described on this card and has seen nothing else; outside those kinds of text its output degrades "
    "quickly. No safety tuning, red-teaming or bias evaluation was recorded for this model. Do not use it to make "
    "decisions about people, or where a wrong output causes harm, without an evaluation of your own.")


def fmt_num(value: Any) -> str:
    if value is None:
        return NOT_RECORDED
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(rows: list[tuple[str, Any]], head: tuple[str, str] = ("", "")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {k} | {fmt_num(v)} |" for k, v in rows]
    return "\n".join(lines)


def artifact_status(a: Artifact) -> str:
    if a.missing:
        return "missing (moved or deleted since; its counts are not available here)"
    return "changed since it was used (its manifest hash differs)" if a.changed else "present"


# --- the model card -------------------------------------------------------------------------------------


def build_card(facts: ReleaseFacts):
    """The `ModelCard` of a release (metadata + markdown body)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    evaluation = facts.evaluation()
    eps, delta = facts.epsilon()
    results = [EvalResult(task_type="text-generation", dataset_type="megalang-held-out",
                          dataset_name="held-out split of the training data", metric_type=key, metric_value=value)
               for key, value in evaluation.items() if not key.startswith("privacy_")]
    data = ModelCardData(
        model_name=facts.name, library_name=LIBRARY_NAMES.get(facts.fmt, facts.fmt), pipeline_tag="text-generation",
        tags=["megalang", facts.fmt, *([facts.quant] if facts.quant else []), *facts.data_kinds()],
        eval_results=results or None,
        megalang={"format": facts.fmt, "quant": facts.quant, "params": facts.params,
                  "tokens_seen": facts.summary.get("tokens_seen"), "steps": facts.summary.get("steps"),
                  "epsilon": eps, "delta": delta if eps is not None else None, "origin": facts.origin},
    )
    body = "\n\n".join([f"# {facts.name}", intro(facts), model_section(facts), tokenizer_section(facts),
                        training_section(facts), data_section(facts), eval_section(facts, evaluation),
                        privacy_section(eps, delta), use_section(facts), provenance_section(facts)])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def write_card(facts: ReleaseFacts, dest: Path) -> None:
    build_card(facts).save(dest / CARD)
    (dest / DATASHEET).write_text(build_datasheet(facts), encoding="utf-8")


def intro(facts: ReleaseFacts) -> str:
    quant = f", weights {facts.quant}" if facts.quant else ""
    return (f"A {facts.architecture or 'causal'} language model of {facts.params:,} parameters trained with megalang "
            f"({facts.objective()}), exported as `{facts.fmt}`{quant}. Every number on this card is read from the "
            f"manifests of the artifacts that made it; `{DATASHEET}` describes the training corpus"
            + "; `bom.cdx.json` lists the files, datasets and libraries (CycloneDX ML-BOM).")


def model_section(facts: ReleaseFacts) -> str:
    shape = facts.shape
    preset = ((facts.run_config or {}).get("model") or {}).get("preset")
    rows = [("architecture", facts.architecture), ("layers", shape.get("num_hidden_layers")),
            ("hidden size", shape.get("hidden_size")), ("intermediate size", shape.get("intermediate_size")),
            ("attention heads", shape.get("num_attention_heads")), ("key/value heads", shape.get("num_key_value_heads")),
            ("vocabulary", shape.get("vocab_size")), ("context length", shape.get("max_position_embeddings")),
            ("parameters", facts.params),
            ("base model", facts.base_model or ("none (trained from scratch)" if facts.run_config else None)),
            ("format", facts.fmt), ("quantisation", facts.quant or "none (as trained)")]
    if not facts.base_model:
        rows.insert(-2, ("megalang preset", preset))
    return "## Model\n\n" + table(rows, ("", "value"))


def tokenizer_section(facts: ReleaseFacts) -> str:
    tok = facts.tokenizer
    trained = facts.stage("tokenizer.train")
    rows = [("type", tok.get("type")), ("vocabulary size", tok.get("vocab_size")),
            ("byte fallback", tok.get("byte_fallback")), ("special tokens", ", ".join(tok.get("special_tokens") or []) or None)]
    if trained:
        counts = trained[0].counts
        rows += [("trained by", "megalang tokenizer train (SentencePiece BPE)"),
                 ("training sample", f"{fmt_num(counts.get('sentences_sampled'))} sentences of "
                                     f"{fmt_num(counts.get('documents'))} documents")]
    elif facts.stage("tokenizer.pretrained"):
        rows.append(("origin", "the base model's tokenizer"))
    return "## Tokenizer\n\n" + table(rows, ("", "value"))


def training_section(facts: ReleaseFacts) -> str:
    cfg = facts.run_config
    if not cfg:
        why = "the run folder was moved or deleted" if facts.run_missing else "no training run is recorded"
        return f"## Training\n\nNot recorded: {why}."
    opt, sched, train = cfg.get("optimizer", {}), cfg.get("schedule", {}), cfg.get("train", {})
    s, d = facts.summary, facts.derived
    rows = [("objective", facts.objective()),
            ("optimizer", optimizer_text(train.get("optimizer", "adamw"), opt)),
            ("peak learning rate", opt.get("lr")),
            ("schedule", schedule_text(sched)),
            ("steps", s.get("steps", train.get("max_steps"))),
            ("sequence length", train.get("seq_len")),
            ("batch", f"{fmt_num(d.get('global_batch_tokens'))} tokens per step "
                      f"({train.get('micro_batch_size')} sequences per micro-batch, {fmt_num(d.get('world_size'))} ranks)"),
            ("precision", train.get("precision")),
            ("tokens seen", s.get("tokens_seen")),
            ("train loss (first → last)", f"{fmt_num(s.get('train_loss_first'))} → {fmt_num(s.get('train_loss_last'))}"),
            ("trainable parameters", s.get("trainable_params")),
            ("device", s.get("device")), ("wall time (s)", s.get("wall_seconds")),
            ("seed", str(cfg.get("seed"))), ("run folder", facts.run_path)]
    return "## Training\n\n" + table(rows, ("", "value"))


def data_section(facts: ReleaseFacts) -> str:
    parts = ["## Training data"]
    prepared = facts.stage("data.prepare")
    for a in prepared:
        c = a.counts
        parts.append(f"**{a.name}** (`megalang data prepare`): {fmt_num(c.get('files'))} raw files, "
                     f"{fmt_num(c.get('documents_in'))} documents read, {fmt_num(c.get('documents_out'))} kept "
                     f"({fmt_num(c.get('bytes_out'))} bytes). By kind: "
                     + (", ".join(f"{k} {fmt_num(v)}" for k, v in c.get("documents_by_kind", {}).items()) or NOT_RECORDED)
                     + ".\n\n" + steps_table(a))
    for a in facts.stage("data.tokenize"):
        c = a.counts
        parts.append(f"**{a.name}** (token shards): {fmt_num(c.get('train_tokens'))} training tokens in "
                     f"{fmt_num(c.get('train_documents'))} documents, {fmt_num(c.get('val_tokens'))} held-out tokens "
                     f"in {fmt_num(c.get('val_documents'))} documents.")
    for a in facts.missing():
        parts.append(f"**{a.name}** ({a.stage}): missing at {a.path}; its counts are not available here.")
    if not prepared and not facts.missing():
        parts.append("No prepared corpus is recorded in the lineage"
                     + (f" ({facts.lineage_problem})" if facts.lineage_problem else "") + ".")
    parts.append(f"See `{DATASHEET}` for the raw files, their SHA-256 and every preprocessing step.")
    return "\n\n".join(parts)


def steps_table(a: Artifact) -> str:
    """Documents left after each prepare step, in order, with what each removed."""
    steps = a.counts.get("steps") or {}
    if not steps:
        return ""
    lines = ["| step | documents in | removed | left | bytes out | reasons |", "|---|---|---|---|---|---|"]
    for name, st in steps.items():
        left = st.get("documents_in", 0) - st.get("documents_removed", 0)
        reasons = ", ".join(f"{r} {v[0] if isinstance(v, list) else v}" for r, v in (st.get("reasons") or {}).items())
        lines.append(f"| {name} | {fmt_num(st.get('documents_in'))} | {fmt_num(st.get('documents_removed'))} | "
                     f"{fmt_num(left)} | {fmt_num(st.get('bytes_out'))} | {reasons or '-'} |")
    return "\n".join(lines)


def eval_section(facts: ReleaseFacts, evaluation: dict[str, float]) -> str:
    if not evaluation:
        return "## Evaluation\n\nNo evaluation results were found in the run (no val loss in summary.json or " \
               "metrics.jsonl, no privacy.json)."
    rows = [(k, v) for k, v in evaluation.items()]
    return ("## Evaluation\n\nFrom the run folder (`summary.json`: held-out split of the shards; `privacy.json`: "
            "`megalang eval privacy`).\n\n" + table(rows, ("metric", "value")))


def privacy_section(eps: float | None, delta: float | None) -> str:
    if eps is None:
        return "## Differential privacy\n\nNot trained with differential privacy: no ε applies."
    return (f"## Differential privacy\n\nTrained with DP-SGD (Opacus): (ε = {fmt_num(eps)}, δ = {fmt_num(delta)}) "
            "for the training examples, as the run's accountant reported at the end of training.")


def use_section(facts: ReleaseFacts) -> str:
    kinds = ", ".join(facts.data_kinds()) or NOT_RECORDED
    return (f"## Intended use\n\n{INTENDED_USE}\n\n## Limitations\n\n{LIMITATIONS} The training data's kinds: "
            f"{kinds}.\n\nLicense: {NOT_RECORDED} (megalang does not know the terms of the corpus; set one before "
            "publishing).")


def provenance_section(facts: ReleaseFacts) -> str:
    lines = ["## Provenance", "", f"Exported from the {facts.origin_kind} `{facts.origin}`"
             + (f" at step {facts.step}" if facts.step is not None else "") + ". Lineage (`megalang lineage`):", "",
             "| stage | folder | manifest SHA-256 | status |", "|---|---|---|---|"]
    for a in facts.chain:
        lines.append(f"| {a.stage} | {a.path} | {(a.manifest_sha256 or NOT_RECORDED)[:16]} | {artifact_status(a)} |")
    if facts.lineage_problem:
        lines += ["", f"Lineage incomplete: {facts.lineage_problem}"]
    sig = ("`model.sig` signs every file (`megalang verify OUT --key PUB.pem`)." if facts.signed
           else "The release is not signed (`megalang export --sign KEY` signs it).")
    lines += ["", f"`manifest.json` holds every file's size and SHA-256 (`megalang verify OUT`). {sig}"]
    return "\n".join(lines)


# --- the datasheet --------------------------------------------------------------------------------------


def build_datasheet(facts: ReleaseFacts) -> str:
    prepared = facts.stage("data.prepare")
    shards = facts.stage("data.tokenize")
    parts = [f"# Datasheet: the training corpus of {facts.name}",
             "Answers to the questions of Gebru et al., *Datasheets for Datasets*, as far as megalang's manifests "
             f"record them; \"{NOT_RECORDED}\" marks what megalang does not know."]
    parts.append("## Motivation\n\n- Purpose: training this model (" + facts.objective() + ").\n"
                 f"- Created by / funded by: {NOT_RECORDED}.")
    parts.append(composition(prepared, shards, facts))
    parts.append(collection(prepared))
    parts.append(preprocessing(prepared))
    parts.append("## Uses\n\n- Used to train the model this datasheet ships with (see `README.md`).\n"
                 f"- Other uses, and uses to avoid: {NOT_RECORDED}; see the model card's limitations.")
    parts.append("## Distribution\n\n- The release holds no training text: only the model, its tokenizer and these "
                 "documents. The prepared sets stay where they were made (paths above).\n"
                 f"- License or terms of use of the corpus: {NOT_RECORDED}.")
    parts.append(f"## Maintenance\n\n- Maintainer, errata, updates: {NOT_RECORDED}.\n- A deletion request: "
                 "`megalang lineage` names the artifacts made from a raw file by its SHA-256.")
    return "\n\n".join(parts) + "\n"


def composition(prepared: list[Artifact], shards: list[Artifact], facts: ReleaseFacts) -> str:
    lines = ["## Composition", "", "Instances are documents (one per text file, JSONL record or Parquet row; feeds, "
             "logs and web archives as their readers split them). There are no labels."]
    if not prepared:
        lines += ["", "No prepared set is recorded in the lineage"
                  + (f": {facts.lineage_problem}" if facts.lineage_problem else "") + "."]
    for a in prepared:
        c = a.counts
        lines += ["", f"### {a.name}", "", table([
            ("raw files", c.get("files")), ("files skipped (unknown type)", c.get("files_skipped")),
            ("files skipped (read errors)", c.get("errors_skipped")), ("documents read", c.get("documents_in")),
            ("documents kept", c.get("documents_out")), ("bytes read", c.get("bytes_in")), ("bytes kept", c.get("bytes_out")),
        ], ("", "count"))]
        kinds = c.get("documents_by_kind") or {}
        if kinds:
            lines += ["", table(list(kinds.items()), ("kind", "documents kept"))]
        mixture = (a.manifest or {}).get("mixture")
        if mixture:
            lines += ["", "| source pattern | weight | documents in | documents out | bytes out |", "|---|---|---|---|---|"]
            lines += [f"| {p} | {m.get('weight')} | {fmt_num(m.get('documents_in'))} | {fmt_num(m.get('documents_out'))} | "
                      f"{fmt_num(m.get('bytes_out'))} |" for p, m in mixture.items()]
        lines += ["", "Documents per raw file: not recorded (the manifest counts per step and per kind)."]
    for a in shards:
        c = a.counts
        lines += ["", f"### {a.name} (token shards)", "", table([
            ("documents", c.get("documents")), ("tokens", c.get("tokens")), ("train tokens", c.get("train_tokens")),
            ("held-out tokens", c.get("val_tokens")), ("token type", (a.manifest or {}).get("dtype")),
        ], ("", "count"))]
    for a in facts.missing():
        lines += ["", f"- {a.stage} at {a.path}: missing (moved or deleted); manifest SHA-256 "
                      f"{a.manifest_sha256 or NOT_RECORDED}. Its composition is not available."]
    lines += ["", "Confidential or personal data: see the scrubbing counts under Preprocessing; whether anything "
                  f"beyond what the scrubbers match remains is {NOT_RECORDED}."]
    return "\n".join(lines)


def collection(prepared: list[Artifact]) -> str:
    lines = ["## Collection process", "", f"How and when the raw files were collected, and by whom: {NOT_RECORDED}. "
             "megalang recorded each file it read, by path, size and SHA-256:"]
    for a in prepared:
        raw = a.raw_inputs()
        lines += ["", f"### {a.name} (read {(a.manifest or {}).get('created', NOT_RECORDED)})", "",
                  "| raw file | bytes | SHA-256 |", "|---|---|---|"]
        lines += [f"| {r.get('path')} | {fmt_num(r.get('size'))} | {r.get('sha256', NOT_RECORDED)} |" for r in raw]
    return "\n".join(lines)


def preprocessing(prepared: list[Artifact]) -> str:
    lines = ["## Preprocessing, cleaning, labelling", ""]
    if not prepared:
        return "\n".join(lines + [NOT_RECORDED + "."])
    for a in prepared:
        cfg = (a.manifest or {}).get("config") or {}
        lines += [f"### {a.name}", "", f"Steps in order: {', '.join(cfg.get('steps') or []) or NOT_RECORDED} "
                  f"(normalisation {cfg.get('normalize', NOT_RECORDED)}, minimum {cfg.get('min_chars', NOT_RECORDED)} "
                  "characters).", "", steps_table(a)]
        scrubbed = (a.manifest or {}).get("scrubbed")
        if scrubbed is not None:
            lines += ["", "Scrubbed (replaced with placeholders): "
                      + (", ".join(f"{k} {fmt_num(v)}" for k, v in scrubbed.items()) or "nothing matched") + "."]
        decon = (a.manifest or {}).get("decontamination")
        if decon:
            lines += ["", f"Decontamination against eval sets ({decon.get('mode')}): {fmt_num(decon.get('flagged'))} "
                          "documents flagged."]
        lines += ["", "The raw data is not copied: it stays at the paths above, named by SHA-256. Samples of "
                      "rejected documents, when any, are in the prepared set's `rejected/` folder.", ""]
    return "\n".join(lines)


def optimizer_text(name: str, opt: dict[str, Any]) -> str:
    adamw = (f"AdamW, β=({opt.get('beta1')}, {opt.get('beta2')}), weight decay {opt.get('weight_decay')}, "
             f"grad clip {opt.get('grad_clip')}")
    if name != "muon":
        return adamw
    lr = opt.get("muon_lr") or opt.get("lr")
    decay = opt.get("weight_decay") if opt.get("muon_weight_decay") is None else opt.get("muon_weight_decay")
    return (f"Muon for the blocks' matrices (lr {lr}, momentum {opt.get('muon_momentum')}, weight decay {decay}, "
            f"{opt.get('muon_adjust_lr')} scaling); {adamw} for the rest")


def schedule_text(sched: dict[str, Any]) -> str:
    warmup = f"linear warmup {sched.get('warmup_steps')} steps"
    if sched.get("shape") == "wsd":
        return (f"{warmup}, the peak held, then linear to {sched.get('min_lr')} over the last "
                f"{sched.get('decay_fraction')} of the steps")
    return f"{warmup}, cosine to {sched.get('min_lr')}"
