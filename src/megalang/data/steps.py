"""The per-document steps of `data prepare` (normalise, length, quality, scrub, decontaminate, near-dedup
signatures, the model filter) and the runner that counts what each one removes. Exact and near dedup are decided
over the whole corpus afterwards (data/pipeline.py)."""

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from megalang.config import PrepareConfig
from megalang.data.documents import Doc, doc_id
from megalang.data.sources import source_matches
from megalang.errors import UserError

SAMPLE_CHARS = 4000  # text kept per rejected sample


class Step(Protocol):
    """One document step: return the (possibly changed) document, None to drop it, or a string to drop it
    with that reason ("short_doc"). Steps run per document in config order; the runner does the counting."""

    name: str

    def __call__(self, doc: Doc) -> Doc | str | None: ...


class Normalize:
    name = "normalize"

    def __init__(self, cfg: PrepareConfig):
        self.form = cfg.normalize

    def __call__(self, doc: Doc) -> Doc:
        text = doc.text if self.form == "none" else unicodedata.normalize(self.form, doc.text)
        doc.text = text.strip()
        return doc


class LengthFilter:
    name = "length"

    def __init__(self, cfg: PrepareConfig):
        self.min_chars = max(cfg.min_chars, 1)  # empty documents never survive, even with min_chars=0

    def __call__(self, doc: Doc) -> Doc | None:
        return doc if len(doc.text) >= self.min_chars else None


class Quality:
    """Gopher / C4 / FineWeb / entropy filters, chosen per source kind (see data/quality.py)."""

    name = "quality"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data.quality import KindFilters

        self.filters = KindFilters.from_config(cfg.quality_filters, cfg.quality_params)

    def __call__(self, doc: Doc) -> Doc | str:
        text, reason = self.filters.apply(doc.text, doc.kind)
        if text is None:
            return reason
        doc.text = text
        return doc


class Scrub:
    """Replaces PII and secrets with typed placeholders; the replacements are counted per placeholder. Which kinds
    of PII apply is chosen per document: a `scrub_by_source` glob, else its source kind's `scrub_by_kind` entry
    (security keeps IP addresses), else `scrub` (default: all but the opt-in USER)."""

    name = "scrub"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data import scrub

        for field_name, lists in (("scrub", {"": cfg.scrub or ()}), ("scrub_by_kind", cfg.scrub_by_kind),
                                  ("scrub_by_source", cfg.scrub_by_source)):
            for key, names in lists.items():
                unknown = sorted(set(names) - set(scrub.KINDS))
                if unknown:
                    where = f"{field_name}.{key}" if key else field_name
                    raise UserError(f"{where}: unknown kind(s) {', '.join(unknown)}; known: {', '.join(scrub.KINDS)}")
        self.default = tuple(cfg.scrub) if cfg.scrub is not None else None
        self.by_kind = {kind: tuple(names) for kind, names in cfg.scrub_by_kind.items()}
        self.by_source = {pattern: tuple(names) for pattern, names in cfg.scrub_by_source.items()}
        self.for_source = functools.lru_cache(maxsize=65536)(self._for_source)
        self.replaced: Counter = Counter()
        self._scrub = scrub.scrub

    def _for_source(self, source: str) -> tuple[str, ...] | None:
        return next((names for pattern, names in self.by_source.items() if source_matches(source, pattern)), None)

    def __call__(self, doc: Doc) -> Doc:
        kinds = self.for_source(doc.source) if self.by_source else None
        if kinds is None:
            kinds = self.by_kind.get(doc.kind, self.default)
        text, counts = self._scrub(doc.text, kinds)
        if counts:
            doc.text = text
            self.replaced.update(counts)
        return doc


class Decontaminate:
    """Drops (or flags) documents sharing a word n-gram with the eval files in `decontaminate`."""

    name = "decontaminate"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data.decontaminate import load_contamination

        if not cfg.decontaminate:
            raise UserError("steps: 'decontaminate' needs eval files; set decontaminate=[PATH, ...] (--decontaminate)")
        self.index = load_contamination(tuple(cfg.decontaminate), cfg.text_field, cfg.decontaminate_ngram, cfg.max_doc_bytes)
        self.mode = cfg.decontaminate_mode
        self.flagged: list[dict[str, Any]] = []
        self.flagged_count = 0

    def __call__(self, doc: Doc) -> Doc | str:
        hits = self.index.matches(doc.text)
        if not hits:
            return doc
        if self.mode == "drop":
            return "eval_overlap"
        self.flagged_count += 1
        self.flagged.append({"source": doc.source, "id": doc_id(doc.text), "ngrams": hits})
        return doc


class NearDedupSignature:
    """The per-document half of `near_dedup`: the MinHash signature of a document whose kind is in
    `near_dedup_kinds`; clustering happens in the corpus phase, over the documents that have one."""

    name = "near_dedup"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data.dedup import MinHasher, MinHashParams

        self.hasher = MinHasher(MinHashParams(**cfg.near_dedup.model_dump()))
        self.kinds = frozenset(cfg.near_dedup_kinds)

    def __call__(self, doc: Doc) -> Doc:
        if doc.kind in self.kinds:
            doc.signature = self.hasher.signature(doc.text)
        return doc


class ModelFilter:
    """Drops documents a trained classifier scores at or above `classifier_threshold` (see data/classifier.py)."""

    name = "classifier"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data.classifier import Classifier

        if not cfg.classifier:
            raise UserError("steps: 'classifier' needs a trained classifier; set classifier=FOLDER "
                            "(from `megalang data classifier train`)")
        self.model = Classifier(cfg.classifier)
        self.threshold = cfg.classifier_threshold

    def __call__(self, doc: Doc) -> Doc | str:
        return "classifier_reject" if self.model.reject_probability([doc.text])[0] >= self.threshold else doc


STEPS: dict[str, Callable[[PrepareConfig], Step]] = {
    "normalize": Normalize,
    "length": LengthFilter,
    "quality": Quality,
    "scrub": Scrub,
    "decontaminate": Decontaminate,
    "near_dedup": NearDedupSignature,
    "classifier": ModelFilter,
}
CORPUS_STEPS = ("exact_dedup", "near_dedup")  # decided over the whole corpus, after every map step
# exact_dedup has no per-document part: the map phase only records each text's digest (`map_task`).
KNOWN_STEPS = ("normalize", "length", "exact_dedup", *(name for name in STEPS if name not in ("normalize", "length")))


def build_steps(cfg: PrepareConfig) -> list[Step]:
    """The per-document (map-phase) steps, in config order; every step name is checked."""
    unknown = [s for s in cfg.steps if s not in KNOWN_STEPS]
    if unknown:
        raise UserError(f"steps: unknown step(s) {', '.join(unknown)}; known: {', '.join(KNOWN_STEPS)}")
    if len(set(cfg.steps)) != len(cfg.steps):
        raise UserError(f"steps: each step may appear once ({', '.join(cfg.steps)})")
    if cfg.decontaminate and "decontaminate" not in cfg.steps:
        raise UserError("decontaminate: eval files are set but 'decontaminate' is not in steps; add it to steps")
    return [STEPS[name](cfg) for name in cfg.steps if name in STEPS]


@dataclass
class StepStats:
    documents_in: int = 0
    documents_removed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    reasons: dict[str, list[int]] = field(default_factory=dict)  # reason → [documents, bytes] removed

    def drop(self, reason: str | None, nbytes: int) -> None:
        self.documents_removed += 1
        if reason:
            counts = self.reasons.setdefault(reason, [0, 0])
            counts[0] += 1
            counts[1] += nbytes

    def merge(self, other: StepStats) -> None:
        self.documents_in += other.documents_in
        self.documents_removed += other.documents_removed
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        for reason, (docs, nbytes) in other.reasons.items():
            counts = self.reasons.setdefault(reason, [0, 0])
            counts[0] += docs
            counts[1] += nbytes


class StepRunner:
    """Applies the steps in order to each document and counts documents and UTF-8 bytes in/out per step.

    Keeps the first `samples` rejected documents per step and reason (for `rejected/`).
    """

    def __init__(self, steps: list[Step], samples: int = 0):
        self.steps = steps
        self.stats = {step.name: StepStats() for step in steps}
        self.documents_in = self.bytes_in = 0
        self.samples = samples
        self.rejected: dict[str, list[dict[str, Any]]] = {}
        self._sampled: Counter = Counter()

    def __call__(self, doc: Doc) -> tuple[Doc | None, int]:
        """The surviving document (or None) and its UTF-8 size."""
        nbytes = len(doc.text.encode("utf-8"))
        self.documents_in += 1
        self.bytes_in += nbytes
        for step in self.steps:
            st = self.stats[step.name]
            st.documents_in += 1
            st.bytes_in += nbytes
            before = doc.text
            result = step(doc)
            if result is None or isinstance(result, str):
                st.drop(result, nbytes)
                self.sample(step.name, result or "dropped", doc)
                return None, 0
            doc = result
            if doc.text is not before:  # re-measure only when a step changed the text
                nbytes = len(doc.text.encode("utf-8"))
            st.bytes_out += nbytes
        return doc, nbytes

    def sample(self, step: str, reason: str, doc: Doc, **extra: Any) -> None:
        key = (step, reason)
        if self._sampled[key] < self.samples:
            self._sampled[key] += 1
            self.rejected.setdefault(step, []).append(
                {"reason": reason, "source": doc.source, "text": doc.text[:SAMPLE_CHARS], **extra}
            )
