"""The issue's done-when on the real SmolLM2-135M-Instruct: three simulated sites, each holding a different
planted answer style, train one shared LoRA adapter over a few rounds; the federation's model reproduces every
site's style better than the base model, and no site's records reach the server."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from federation_helpers import QUESTIONS, free_port
from typer.testing import CliRunner

from megalang.cli import app

STYLES = {"0": "BANANA BANANA BANANA.", "1": "Arr, matey, CHERRY CHERRY.", "2": "Beep boop: MANGO MANGO."}



def style_loss(model, tokenizer, answer: str) -> float:
    """Mean NLL of the answer tokens over the questions (the chat template renders prompt and answer)."""
    from megalang.data.sft import render_example

    losses = []
    for q in QUESTIONS:
        chat = [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]
        ids, mask = render_example(tokenizer, chat)
        x = torch.as_tensor(np.asarray(ids, dtype=np.int64))[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[0, :-1].float(), -1)
        target, keep = x[0, 1:], torch.as_tensor(np.asarray(mask[1:], dtype=bool))
        losses.append(-logp[torch.arange(len(target)), target][keep].mean().item())
    return float(np.mean(losses))


@pytest.mark.slow
def test_three_sites_with_three_styles_train_one_adapter(smol_hf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megalang.model.load import load_trained_model

    files = []
    for site, answer in STYLES.items():
        path = tmp_path / f"style-{site}.jsonl"
        path.write_text("".join(json.dumps({"prompt": q, "completion": answer}) + "\n" for q in QUESTIONS))
        files.append(str(path))
    root = tmp_path / "fed"
    result = CliRunner().invoke(app, [
        "federated", "simulate", "recipes/sft-lora.yaml", f"model.pretrained={smol_hf}", f"run.dir={root}",
        f"federated.site_data={json.dumps(files)}", "federated.rounds=3", "federated.local_steps=6",
        "federated.min_clients=3", f"federated.address=127.0.0.1:{free_port()}", "train.seq_len=64",
        "train.micro_batch_size=2", "optimizer.lr=3e-3"])
    logs = "\n".join((root / f"site-{i}.log").read_text()[-2000:] for i in STYLES if (root / f"site-{i}.log").exists())
    assert result.exit_code == 0, result.output + logs
    summary = json.loads(result.output[result.output.rindex("\n{\n") + 1:])
    assert summary["rounds"] == 3 and all(s["exit_code"] == 0 for s in summary["sites"].values())
    rounds = [json.loads(x) for x in (root / "server" / "rounds.jsonl").read_text().splitlines()]
    assert all(sorted(r["accepted"]) == ["0", "1", "2"] for r in rounds if "accepted" in r)

    tokenizer = AutoTokenizer.from_pretrained(smol_hf)
    base = AutoModelForCausalLM.from_pretrained(smol_hf, dtype=torch.float32).eval()
    federated, _ = load_trained_model(root / "site-0")  # every site holds the same global weights at the end
    before = {s: style_loss(base, tokenizer, a) for s, a in STYLES.items()}
    after = {s: style_loss(federated, tokenizer, a) for s, a in STYLES.items()}
    print("answer-token NLL, base → federated:", {s: (round(before[s], 3), round(after[s], 3)) for s in STYLES})
    assert all(after[s] < before[s] for s in STYLES), (before, after)
    adopted = [[json.loads(x) for x in (root / f"site-{s}" / "federated.jsonl").read_text().splitlines()][-1]
               for s in STYLES]
    assert len({a["global_sha256"] for a in adopted}) == 1 and adopted[0]["round"] == 3

    # No site's records reach the server: nothing the server wrote or printed holds a planted answer or a question.
    server_text = result.output + "".join(p.read_bytes().decode("latin-1") for p in (root / "server").rglob("*")
                                          if p.is_file())
    for needle in [*STYLES.values(), *QUESTIONS]:
        assert needle not in server_text
