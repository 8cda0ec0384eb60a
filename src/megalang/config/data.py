"""Config of the data stages: prepare, dedup, the document classifier, tokenizer training, tokenize (text and SFT)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from megalang.config.base import Section

# --- data -------------------------------------------------------------------------------------------


# What the `security` kind scrubs by default: personal data and secrets, not IP addresses (scrub.py has no rule for
# domains, URLs, hashes or CVE/ATT&CK ids, which stay too) — plus user names in authentication logs.
SECURITY_SCRUB = ("PRIVATE_KEY", "JWT", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "GITHUB_TOKEN", "SLACK_TOKEN",
                  "STRIPE_KEY", "SECRET", "USER", "EMAIL", "CARD", "PHONE")
# What the `code` kind scrubs by default: credentials and email addresses only. Addresses in code are constants
# (localhost, netmasks, ipaddress's doctests) and card/phone shapes match number literals, so replacing them would
# change what a program does; an email or a secret sits in a string or a comment, and its placeholder leaves the
# file parseable (all 601 stdlib modules of the demo corpus still parse after it; 122 lose an author email).
CODE_SCRUB = ("PRIVATE_KEY", "JWT", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "GITHUB_TOKEN", "SLACK_TOKEN", "STRIPE_KEY",
              "SECRET", "EMAIL")
DEFAULT_SCRUB_BY_KIND = {"code": CODE_SCRUB, "security": SECURITY_SCRUB}
# Every step a document can get without extra input (decontaminate needs eval files, classifier a trained model);
# what each one does to a document is chosen by its source kind (docs/data.md "The default chain per kind").
DEFAULT_STEPS = ("normalize", "length", "quality", "scrub", "exact_dedup", "near_dedup")


class PrepareConfig(Section):
    """`megalang data prepare`: raw files → clean, deduplicated documents (Parquet)."""

    inputs: list[str] = Field(min_length=1, description="files, folders (walked recursively) or globs")
    out: str = Field(description="output artifact folder")
    exclude: list[str] = Field(default_factory=list, description="glob patterns on file paths to skip while walking")
    text_field: str = Field("text", description="JSONL key / Parquet column holding the text")
    normalize: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normalisation form: NFC, NFKC or none")
    min_chars: int = Field(16, ge=0, description="drop documents shorter than this after normalisation")
    max_doc_bytes: int = Field(64 << 20, ge=1, description="refuse a single document larger than this")
    steps: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STEPS),
        description="document steps, in order (default: the full chain; each source kind gets its own quality rules, "
        "scrub list and near-dedup choice); a shorter list narrows it",
    )
    docs_per_file: int = Field(100_000, ge=1, description="documents per output Parquet file")
    errors: Literal["strict", "skip"] = Field(
        "strict", description="strict: stop at the first bad file; skip: skip bad files/lines, list them in the manifest"
    )
    overwrite: bool = Field(False, description="replace an existing output folder")
    # --- issue #5: quality, near-dedup, scrubbing, decontamination, execution (see docs/data.md) ---
    kind: Literal["auto", "web", "books", "code", "chat", "security"] = Field(
        "auto", description="source kind for quality filters, scrubbing and near-dedup: auto, web, books, code, chat, "
        "security; auto: feeds, STIX bundles and logs→security, web archives→web, code suffix→code, .txt/.md→books, "
        "else web"
    )
    kinds: dict[str, Literal["web", "books", "code", "chat", "security"]] = Field(
        default_factory=dict, description="glob on a document's source path → kind; overrides `kind` and the readers'"
    )
    quality_filters: dict[str, list[str]] = Field(
        default_factory=dict, description="kind → filter names, replacing that kind's default chain"
    )
    quality_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="filter name → thresholds to change (e.g. gopher_quality: {min_doc_words: 30})"
    )
    near_dedup: NearDedupConfig = Field(default_factory=lambda: NearDedupConfig())
    # Beside near_dedup, not in it: NearDedupConfig is exactly the MinHash parameters (data/dedup.py MinHashParams).
    near_dedup_kinds: list[Literal["web", "books", "code", "chat", "security"]] = Field(
        default_factory=lambda: ["web", "books", "code", "chat"],
        description="source kinds the near_dedup step compares (default: all but security, whose CVE records and "
        "log windows are templated: two different CVEs of one product can differ in a few words)",
    )
    scrub: list[str] | None = Field(
        None, description="PII/secret kinds to scrub (default: all but the opt-in USER; see docs/data.md)"
    )
    scrub_by_kind: dict[str, list[str]] = Field(
        default_factory=lambda: {kind: list(names) for kind, names in DEFAULT_SCRUB_BY_KIND.items()},
        description="source kind → PII/secret kinds to scrub there, replacing `scrub` for that kind; entries you set "
        "replace the default's entry for that kind only (default: code scrubs secrets and emails, not addresses or "
        "numbers; security keeps IP addresses, the indicators of compromise, and scrubs user names in auth logs)",
    )
    scrub_by_source: dict[str, list[str]] = Field(
        default_factory=dict, description="glob on a document's source path → PII/secret kinds; overrides the rest"
    )
    # --- issue #18: security feeds, logs and web archives (data/structured.py) ---
    languages: list[str] = Field(
        default_factory=list, description="web archives: keep pages in these languages only (ISO 639-1, e.g. en, es)"
    )
    log_window_s: float = Field(300, gt=0, description="logs: one document per host per time window of this length")
    log_message_field: str | None = Field(None, description="JSON-lines logs: the message field (default: guessed)")
    log_time_field: str | None = Field(None, description="JSON-lines logs: the time field (default: guessed)")
    log_host_field: str | None = Field(None, description="JSON-lines logs: the host field (default: guessed)")
    log_year: int | None = Field(
        None, ge=1970, le=9999, description="RFC 3164 syslog (no year in its stamps): the year; default from the file's mtime"
    )
    max_feed_bytes: int = Field(
        512 << 20, ge=1, description="vulnerability feeds and STIX bundles are parsed whole: refuse larger ones"
    )
    decontaminate: list[str] = Field(default_factory=list, description="eval files/folders/globs to decontaminate against")
    decontaminate_ngram: int = Field(13, ge=4, description="word n-gram length that counts as overlap")
    decontaminate_mode: Literal["drop", "flag"] = Field("drop", description="drop contaminated docs, or keep and list them")
    executor: Literal["local", "ray"] = Field("local", description="local: a process per core; ray: Ray tasks")
    workers: int = Field(0, ge=0, description="parallel workers (0 = all cores)")
    task_bytes: int = Field(8 << 20, ge=1, description="input bytes per task (files are grouped in order up to this)")
    rejected_samples: int = Field(20, ge=0, description="rejected docs kept per step and reason under rejected/")
    progress: bool = Field(True, description="show a progress bar (docs/s, MB/s) when attached to a terminal")
    classifier: str | None = Field(None, description="folder from `megalang data classifier train` (the `classifier` step)")
    classifier_threshold: float = Field(0.5, ge=0, le=1, description="drop docs whose P(reject) is at least this")
    mixture: dict[str, float] = Field(
        default_factory=dict,
        description="glob on source path → weight: 2.5 writes each doc 2 or 3 times (2.5 on average), 0.3 keeps 30%",
    )

    @field_validator("scrub_by_kind", mode="after")
    @classmethod
    def _scrub_defaults_stay(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # Setting one kind (scrub_by_kind.web=[EMAIL]) must not silently hand code and security data every rule.
        return {**{kind: list(names) for kind, names in DEFAULT_SCRUB_BY_KIND.items()}, **value}


class NearDedupConfig(Section):
    """MinHash near-duplicate removal (the `near_dedup` step)."""

    ngram: int = Field(5, ge=1, description="word n-gram (shingle) length")
    bands: int = Field(14, ge=1, description="LSH bands")
    rows: int = Field(8, ge=1, description="rows (hashes) per band")
    min_similarity: float = Field(0.65, ge=0, le=1, description="estimated Jaccard a candidate pair needs to merge")
    seed: int = Field(1, description="seeds the hash permutations")


class ClassifierTrainConfig(Section):
    """`megalang data classifier train`: a reject/keep head on all-MiniLM-L6-v2 embeddings."""

    input: str = Field(description="JSONL of labelled examples (text + label, 1 = reject)")
    out: str = Field(description="output classifier folder")
    text_field: str = Field("text", description="JSON key holding the text")
    label_field: str = Field("label", description="JSON key holding the label (0/1 or true/false)")
    holdout: float = Field(0.2, ge=0, lt=1, description="fraction of examples held out to report accuracy")
    l2: float = Field(1e-3, ge=0, description="L2 penalty of the logistic regression")
    seed: int = Field(0, description="seeds the holdout split")
    overwrite: bool = Field(False, description="replace an existing output folder")


class TokenizerTrainConfig(Section):
    """`megalang tokenizer train`: SentencePiece BPE with byte fallback, plus tokenizer.json."""

    input: str = Field(description="folder written by `megalang data prepare`")
    out: str = Field(description="output tokenizer folder")
    vocab_size: int = Field(8192, ge=260, le=1 << 20, description="vocabulary size incl. byte and special tokens")
    character_coverage: float = Field(0.9995, gt=0, le=1, description="SentencePiece character coverage")
    # 300k sentences ≈ 85 MB of code: SentencePiece then trains in ~15 s using ~1.2 GB of memory.
    max_sentences: int = Field(
        300_000, ge=1, description="training sentences sampled (each a run of up to 8 lines, newlines kept)"
    )
    max_sentence_length: int = Field(8192, ge=16, description="longer lines are skipped by SentencePiece")
    seed: int = Field(1234, description="seeds the sentence sample")
    overwrite: bool = Field(False, description="replace an existing output folder")


class CurriculumConfig(Section):
    """Difficulty order of the train split (issue #5; see docs/data.md "Curriculum"): stages the loader walks in order."""

    by: str = Field("none", description="none, length (tokens), chars, or column:NAME (a numeric column; see scores)")
    stages: int = Field(4, ge=1, le=1024, description="stages of equal token count (ignored when boundaries are set)")
    boundaries: list[float] = Field(
        default_factory=list, description="explicit score thresholds between stages (sorted); stages = len + 1"
    )
    order: Literal["easy_first", "hard_first"] = Field("easy_first", description="low scores first, or high first")
    scores: str | None = Field(
        None, description="Parquet/JSONL with the prepared documents' `id` and the numeric column of `by`=column:NAME"
    )

    @model_validator(mode="after")
    def _check(self) -> CurriculumConfig:
        if self.by not in ("none", "length", "chars") and not (self.by.startswith("column:") and self.by[7:]):
            raise ValueError(f"curriculum.by={self.by!r}: use none, length, chars or column:NAME")
        if self.boundaries != sorted(self.boundaries):
            raise ValueError("curriculum.boundaries must be sorted ascending")
        if self.scores and not self.by.startswith("column:"):
            raise ValueError(f"curriculum.scores is only read with curriculum.by=column:NAME (by is {self.by!r})")
        return self


class TokenizeConfig(Section):
    """`megalang data tokenize`: documents → packed token shards (train-*/val-*)."""

    input: str = Field(description="folder written by `megalang data prepare`")
    tokenizer: str = Field(description="folder written by `megalang tokenizer train`")
    out: str = Field(description="output shard folder")
    val_fraction: float = Field(0.01, ge=0, lt=1, description="documents held out for validation (by id hash)")
    val_sources: list[str] = Field(
        default_factory=list, description="glob patterns on a document's source path; matches go to val"
    )
    tokens_per_shard: int = Field(1 << 28, ge=1024, description="tokens per .bin file before starting a new one")
    batch_docs: int = Field(1024, ge=1, description="documents encoded per batch")
    curriculum: CurriculumConfig = Field(default_factory=lambda: CurriculumConfig())
    overwrite: bool = Field(False, description="replace an existing output folder")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: this process (encodes on all cores); ray: Ray tasks encode slices of the corpus "
        "and write shards in parallel (same bytes)"
    )
    workers: int = Field(0, ge=0, description="executor=ray: CPUs of the local Ray it starts (0 = all cores)")
    task_docs: int = Field(
        65536, ge=1, description="executor=ray: documents per encode task (whole Parquet row groups, up to this many)"
    )


class SftTokenizeConfig(Section):
    """`megalang data tokenize --format sft`: chat / prompt-completion JSONL → shards plus a loss-mask file."""

    input: str = Field(description="JSONL file: {messages: [{role, content}, ...]} or {prompt, completion} per line")
    model: str = Field(description="Hugging Face folder or .gguf file whose tokenizer and chat template are used")
    out: str = Field(description="output shard folder")
    val_input: str | None = Field(None, description="held-out JSONL of the same form, written as the val split")
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="without val_input: examples of input held out as val (by a hash of each example)"
    )
    train_only: str | None = Field(
        None, description="JSONL of the same form added to the train split only, after input (data.canaries writes it)"
    )
    overwrite: bool = Field(False, description="replace an existing output folder")


SftQuestion = Literal["cwe", "severity", "affected", "tactics", "platforms", "mitigations", "detection", "used_by"]


class SftFromConfig(Section):
    """`megalang data sft-from`: CVE and ATT&CK documents → chat JSONL for `data.sft` (train.jsonl, val.jsonl)."""

    input: str = Field(description="folder written by `megalang data prepare` from feeds and STIX bundles")
    out: str = Field(description="output folder (train.jsonl, val.jsonl, manifest.json)")
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="records held out as val.jsonl, by a hash of the record id (all its questions)"
    )
    seed: int = Field(0, description="seeds the split hash and the choice among each question's phrasings")
    questions: list[SftQuestion] = Field(
        default_factory=lambda: ["cwe", "severity", "affected", "tactics", "platforms", "mitigations", "detection",
                                 "used_by"],
        min_length=1, description="question types to ask (a CVE: cwe, severity, affected; a technique: tactics, "
        "platforms, mitigations, detection, used_by)",
    )
    overwrite: bool = Field(False, description="replace an existing output folder")
