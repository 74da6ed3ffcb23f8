"""`calmix eval` end to end on a tiny saved model folder."""

from __future__ import annotations

import json

import pytest

from calmix.cli import main
from calmix.evals.itemscores import score_of


def test_unknown_task_or_suite_exits_2(tmp_path, capsys):
    assert main(["eval", "--model", "default", "--tasks", "arc_easy,nope", "--out", str(tmp_path / "o.json")]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["eval", "--model", "default", "--suite", "huge", "--out", str(tmp_path / "o.json")])
    assert err.value.code == 2
    assert not (tmp_path / "o.json").exists()


def test_model_without_tokenizer_exits_2(tmp_path, tiny_model, capsys):
    folder = tmp_path / "notok"
    tiny_model.save_pretrained(folder)
    rc = main(["eval", "--model", str(folder), "--tasks", "humaneval_probe_pkg", "--limit", "2",
               "--out", str(tmp_path / "o.json")])
    assert rc == 2 and "tokenizer" in capsys.readouterr().err


def test_cli_eval_with_dense_cache(tiny_dir, tmp_path, monkeypatch, shared, capsys):
    monkeypatch.setenv("CALMIX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "res" / "eval.json"
    args = ["eval", "--model", str(tiny_dir), "--suite", "small",
            "--tasks", "wikitext2_probe,arc_easy,humaneval_probe,gsm8k_probe", "--limit", "3", "--seed", "1",
            "--dense", str(tiny_dir), "--out", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    scores = data["scores"]
    assert set(scores["tasks"]) == {"wikitext2_probe", "arc_easy", "humaneval_probe", "gsm8k_probe"}
    assert all(t["n"] == 3 for t in scores["tasks"].values())
    # the dense model is the same model: every retention is 100 % (None where a random model is below chance,
    # and then Total is not measured either)
    for dim in ("General", "Code", "Math"):
        assert data["retention"][dim] == pytest.approx(100.0, abs=1e-6)
    dense_cs = data["dense"]["dimensions"]["Commonsense"]
    assert data["retention"]["Commonsense"] == (pytest.approx(100.0) if dense_cs > 0 else None)
    floored = data["retention"]["floored"]  # a random model is at the floor on some tasks: Total not measured
    assert set(floored) <= {"General", "Commonsense", "Code", "Math"}
    assert data["retention"]["Total"] == (pytest.approx(100.0) if dense_cs > 0 and not floored else None)
    # every task carries its per-item values, and they give back the task's score
    for t in scores["tasks"].values():
        assert len(t["items"]["ids"]) == t["n"] and score_of(t["items"]) == pytest.approx(t["score"])
    record = json.loads((out.parent / "eval.run.json").read_text())
    assert record["command"] == "eval" and record["config"]["limit"] == 3
    cached = list((tmp_path / "cache" / "dense").glob("*.json"))
    assert len(cached) == 1
    table = capsys.readouterr().out
    assert "Total retention" in table and "arc_easy" in table

    # Second run: the dense scores come from the cache, not recomputed.
    assert main(args) == 0
    again = json.loads(out.read_text())
    assert again["dense"]["config"]["cached"] == str(cached[0])
    assert again["dense"]["dimensions"] == data["dense"]["dimensions"]

    # --dense may also be an earlier output file.
    out2 = tmp_path / "res" / "eval2.json"
    assert main(args[:-4] + ["--dense", str(out), "--out", str(out2)]) == 0
    assert json.loads(out2.read_text())["retention"]["General"] == pytest.approx(100.0)

    # A bf16 run is compared with the dense model in bf16 too: its own cache entry, retention 100 % again.
    out3 = tmp_path / "res" / "eval3.json"
    assert main(args[:-2] + ["--dtype", "bfloat16", "--out", str(out3)]) == 0
    assert len(list((tmp_path / "cache" / "dense").glob("*.json"))) == 2
    bf16 = json.loads(out3.read_text())
    assert bf16["retention"]["General"] == pytest.approx(100.0, abs=1e-6)
    assert bf16["dense"]["dimensions"]["General"] != data["dense"]["dimensions"]["General"]


def test_engine_lm_eval_wraps_adapter_results(tiny_dir, tmp_path, monkeypatch, capsys):
    """The CLI's lm-eval path: needs --tasks; maps the adapter's {task: {dimension, score, metrics}} into scores."""
    import calmix.evals.lmeval as lmeval

    calls = []

    def fake_run(model, tokenizer, tasks, limit, device="cpu", batch_size=8, seed=0):
        calls.append((tuple(tasks), limit, seed))
        return {t: {"dimension": "Commonsense", "score": 0.5, "metric": "acc", "metrics": {"acc": 0.5}} for t in tasks}

    monkeypatch.setattr(lmeval, "run_lm_eval", fake_run)
    out = tmp_path / "lm.json"
    assert main(["eval", "--model", str(tiny_dir), "--engine", "lm-eval", "--out", str(out)]) == 2
    assert "--tasks" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_dir), "--engine", "lm-eval", "--tasks", "calmix_piqa", "--limit", "4",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert calls == [(("calmix_piqa",), 4, 0)]
    assert data["engine"] == "lm-eval" and data["scores"]["dimensions"]["Commonsense"] == 0.5


def test_dense_file_of_other_settings_is_refused(tmp_path, capsys):
    """--dense FILE must come from the same suite, tasks, limit and seed: refused before any model is loaded."""
    dense = tmp_path / "dense.json"
    config = {"suite": "small-offline", "tasks": ["humaneval_probe_pkg"], "limit": 5, "seed": 0}
    dense.write_text(json.dumps({"suite": "small-offline", "dimensions": {}, "config": config,
                                 "tasks": {"humaneval_probe_pkg": {"dimension": "Code", "score": 0.1}}}))
    base = ["eval", "--model", "no-such-model", "--suite", "small-offline", "--tasks", "humaneval_probe_pkg",
            "--dense", str(dense), "--out", str(tmp_path / "o.json")]
    assert main(base + ["--limit", "3"]) == 2
    err = capsys.readouterr().err
    assert "limit 5, the pruned model with 3" in err and "same --suite, --tasks, --limit and --seed" in err
    assert len(err.strip().splitlines()) == 1
    assert main(base + ["--limit", "5", "--seed", "2"]) == 2 and "seed 0" in capsys.readouterr().err
    other = ["eval", "--model", "no-such-model", "--suite", "small-offline", "--tasks", "gsm_symbolic_probe",
             "--limit", "5", "--dense", str(dense), "--out", str(tmp_path / "o.json")]
    assert main(other) == 2 and "tasks" in capsys.readouterr().err
    # the same settings pass the check and fail later, on the missing model
    assert main(base + ["--limit", "5"]) == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
