"""lm-eval adapter: dimension table, offline task YAMLs, and scores equal to a direct log-likelihood computation."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from calmix.errors import CalmixError
from calmix.evals import lmeval
from calmix.evals.lmeval import LOCAL_TASKS, lmeval_task_yaml, run_lm_eval, task_dimension

HAVE_LMEVAL = importlib.util.find_spec("lm_eval") is not None


@pytest.mark.parametrize("name,dim", [
    ("mmlu", "General"), ("mmlu_abstract_algebra", "General"), ("arc_easy", "Commonsense"),
    ("arc_challenge", "Commonsense"), ("hellaswag", "Commonsense"), ("piqa", "Commonsense"),
    ("winogrande", "Commonsense"), ("boolq", "Commonsense"), ("openbookqa", "Commonsense"), ("siqa", "Commonsense"),
    ("copa", "Commonsense"), ("humaneval", "Code"), ("mbpp", "Code"), ("gsm8k", "Math"), ("gsm8k_cot", "Math"),
    ("minerva_math_algebra", "Math"), ("calmix_arc_easy", "Commonsense"), ("calmix_piqa", "Commonsense"),
])
def test_task_dimension(name, dim):
    assert task_dimension(name) == (dim, None)


def test_unknown_task_is_other_with_note():
    dim, note = task_dimension("truthfulqa_mc2")
    assert dim == "Other" and "truthfulqa_mc2" in note


def test_task_yaml_points_at_shared_file(shared, tmp_path):
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load(lmeval_task_yaml("calmix_arc_easy"))
    path = cfg["dataset_kwargs"]["data_files"]["test"]
    assert cfg["task"] == "calmix_arc_easy" and cfg["dataset_path"] == "json" and cfg["output_type"] == "multiple_choice"
    assert path.startswith("/") and path.endswith("eval/arc_easy/test.jsonl")
    assert cfg["doc_to_text"] == "Question: {{question}}\nAnswer:"
    for name in LOCAL_TASKS:
        assert yaml.safe_load(lmeval_task_yaml(name))["task"] == name
    with pytest.raises(CalmixError, match="unknown calmix lm-eval task"):
        lmeval_task_yaml("calmix_nope")
    with pytest.raises(CalmixError, match="CALMIX_DATA"):
        lmeval_task_yaml("calmix_piqa", data_root=tmp_path)


def test_missing_lmeval_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(lmeval.importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    with pytest.raises(CalmixError, match=r"pip install 'calmix\[lm-eval\]'"):
        run_lm_eval(None, None, ["calmix_arc_easy"], limit=5)


def _direct_logprobs(model, tokenizer, context: str, choices: list[str]) -> list[float]:
    """Sum of log p(choice tokens | context), encoding context+choice together and cutting at the context length."""
    ctx_ids = tokenizer.encode(context, add_special_tokens=False)
    out = []
    for choice in choices:
        whole = tokenizer.encode(context + " " + choice, add_special_tokens=False)
        assert whole[:len(ctx_ids)] == ctx_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), dim=-1)
        out.append(sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx_ids), len(whole))))
    return out


def _first(path, n):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(next(fh)) for _ in range(n)]


@pytest.mark.skipif(not HAVE_LMEVAL, reason="lm-eval is not installed (pip install 'calmix[lm-eval]')")
def test_run_lm_eval_matches_direct_computation(tiny_model, tiny_tokenizer, shared):
    n = 5
    res = run_lm_eval(tiny_model, tiny_tokenizer, ["calmix_arc_easy", "calmix_piqa"], limit=n, batch_size=4,
                      return_samples=True)
    docs = {
        "calmix_arc_easy": [(f"Question: {r['question']}\nAnswer:", r["choices"], int(r["label"]))
                            for r in _first(shared / "eval/arc_easy/test.jsonl", n)],
        "calmix_piqa": [(f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], int(r["label"]))
                        for r in _first(shared / "eval/piqa/valid.hf.jsonl", n)],
    }
    for name, items in docs.items():
        entry = res[name]
        assert entry["dimension"] == "Commonsense" and entry["metric"] == "acc_norm" and entry["n"] == n
        assert [s["doc_id"] for s in entry["samples"]] == list(range(n))
        acc = acc_norm = 0.0
        for (ctx, choices, gold), sample in zip(items, entry["samples"]):
            direct = _direct_logprobs(tiny_model, tiny_tokenizer, ctx, choices)
            assert sample["target"] == gold
            assert sample["logprobs"] == pytest.approx(direct, abs=2e-3)
            acc += float(max(range(len(direct)), key=lambda j: (direct[j], -j)) == gold)
            normed = [lp / len(c) for lp, c in zip(direct, choices)]
            acc_norm += float(max(range(len(normed)), key=lambda j: (normed[j], -j)) == gold)
        assert entry["metrics"]["acc"] == pytest.approx(acc / n)
        assert entry["metrics"]["acc_norm"] == pytest.approx(acc_norm / n)
        assert entry["score"] == entry["metrics"]["acc_norm"]


@pytest.mark.skipif(not HAVE_LMEVAL, reason="lm-eval is not installed (pip install 'calmix[lm-eval]')")
def test_run_lm_eval_equals_calmix_scorer(tiny_model, tiny_tokenizer, shared):
    """Same prompts, same items: lm-eval's accuracy equals calmix's own multiple-choice scorer."""
    from calmix.evals.scorers import score_mc_items
    from calmix.evals.task import get_task

    n = 5
    res = run_lm_eval(tiny_model, tiny_tokenizer, ["calmix_arc_easy"], limit=n, batch_size=8, return_samples=True)
    task = get_task("arc_easy")
    items = [task.formatter(r, []) for r in task.records()[:n]]
    own = score_mc_items(tiny_model, tiny_tokenizer, items, batch_size=8)
    for sample, mine in zip(res["calmix_arc_easy"]["samples"], own):
        assert sample["logprobs"] == pytest.approx(mine["logprobs"], abs=2e-3)
    assert res["calmix_arc_easy"]["metrics"]["acc"] == pytest.approx(sum(o["acc"] for o in own) / n)
    assert res["calmix_arc_easy"]["metrics"]["acc_norm"] == pytest.approx(sum(o["acc_norm"] for o in own) / n)
