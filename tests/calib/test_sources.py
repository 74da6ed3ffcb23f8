"""Source registry: coverage of dimensions, package-only sources, readers on the real files, eval hold-outs."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from calmix.calib.sources import SOURCES, Source, _norm, get_source
from calmix.calib.templates import BIGBENCH_TASKS, adapters_mc, adapters_question
from calmix.data import bigbench, files, hub, packages
from calmix.data.reserved import BIGBENCH_EVAL_TASKS, GSM_SYMBOLIC_EVAL_TEMPLATES
from calmix.errors import CalmixError

HAVE_RG = importlib.util.find_spec("reasoning_gym") is not None


@pytest.fixture()
def offline_no_data(monkeypatch, tmp_path):
    """No data root and no hub: only package-embedded sources can work."""
    monkeypatch.setenv("CALMIX_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("CALMIX_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


def _jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def test_registry_covers_dimensions_and_origins():
    assert len(SOURCES) >= 15
    dims = {s.dimension for s in SOURCES.values()}
    assert {"General", "Commonsense", "Code", "Math"} <= dims
    for name, src in SOURCES.items():
        assert src.name == name and src.description and src.origins(), name
    # every source with a local fallback also names its hub location for users (except local-only composites)
    assert all(s.hub is not None for s in SOURCES.values() if s.local and s.in_all)
    assert SOURCES["metamath"].hub.dataset == "meta-math/MetaMathQA"


def test_unknown_source_lists_known():
    with pytest.raises(CalmixError, match="choose one of .*c4.*gsm8k"):
        get_source("nope")


def test_metamath_unavailable_offline(offline_no_data):
    ok, why = get_source("metamath").available()
    assert not ok and "hub" in why
    assert get_source("metamath").origin() == "none"
    with pytest.raises(CalmixError, match="not available"):
        get_source("metamath").documents()


def test_at_least_eight_package_only_sources(offline_no_data):
    if not HAVE_RG:
        pytest.skip("reasoning-gym not installed (pip install reasoning-gym==0.1.25)")
    ok = [n for n, s in SOURCES.items() if s.available()[0]]
    assert all(SOURCES[n].origin() == "package" for n in ok)
    assert len(ok) >= 8, ok
    assert {SOURCES[n].dimension for n in ok} >= {"General", "Commonsense", "Code", "Math"}
    for n in ("pydoc-topics", "gsm-symbolic", "rg-logic"):
        docs = SOURCES[n].documents()
        assert len(docs) > 50 and all(d.strip() for d in docs)
    # shared-data sources say why they are missing
    ok_c4, why = SOURCES["c4"].available()
    assert not ok_c4 and "calib/c4" in why


def test_stdlib_code_excludes_tests_and_is_deterministic():
    files = packages.stdlib_files()
    assert len(files) > 300
    root = packages.stdlib_root()
    rel = [f.relative_to(root).as_posix() for f in files]
    assert not any(f.startswith(("test/", "tests/")) or "/test/" in f or "/tests/" in f for f in rel)
    assert "os.py" in rel and "json/decoder.py" in rel
    assert rel == sorted(rel)
    assert files == packages.stdlib_files()
    assert any("def " in d for d in get_source("stdlib").documents(limit=50))


@pytest.mark.skipif(not HAVE_RG, reason="reasoning-gym not installed")
def test_gsm_symbolic_uses_only_calibration_templates():
    tids = packages.gsm_symbolic_calib_templates()
    assert len(tids) >= 50 and not set(tids) & set(GSM_SYMBOLIC_EVAL_TEMPLATES)
    docs = packages.gsm_symbolic_docs(per_template=2)
    assert len(docs) == 2 * len(tids)
    assert all(d.startswith("Question: ") and "\nAnswer: " in d for d in docs)
    assert docs == packages.gsm_symbolic_docs(per_template=2)
    # evaluation instances (reserved templates) never appear among calibration documents: compare question
    # skeletons (numbers and names stripped), which identify the template
    from random import Random

    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import GSMSymbolicDataset, GSMSymbolicDatasetConfig

    gens = GSMSymbolicDataset(GSMSymbolicDatasetConfig(seed=0, size=1)).generators

    def skeleton(q: str) -> str:
        return re.sub(r"[0-9]+|[A-Z][a-z]+", "#", q)[:60]

    calib_sk = {skeleton(d[len("Question: "):]) for d in docs}
    eval_sk = {skeleton(gens[t](Random(k), 1.0)["question"]) for t in GSM_SYMBOLIC_EVAL_TEMPLATES for k in range(3)}
    assert not (calib_sk & eval_sk), calib_sk & eval_sk  # (39 shared skeletons if all templates were used)


def test_local_sources_load_real_files(shared):
    for name, src in SOURCES.items():
        if not src.local:
            continue
        assert src.origin() == "local", (name, src.available())
        docs = src.documents()
        assert len(docs) >= 50, name
        assert all(isinstance(d, str) and d.strip() for d in docs), name
        assert src.version.startswith("local:files="), name
    assert SOURCES["gsm8k"].documents()[0].startswith("Question: ") and "####" in SOURCES["gsm8k"].documents()[0]
    assert "\nA: " in SOURCES["dailydialog"].documents()[0] or SOURCES["dailydialog"].documents()[0].startswith("A: ")
    arc = SOURCES["arc-easy"].documents()[0]
    assert re.search(r"\nA\. .*\nAnswer: [A-E]\. ", arc, re.S), arc
    assert "Instruction:" in SOURCES["codealpaca"].documents()[0]
    assert len(SOURCES["codealpaca"].documents()) == 2017 + 4535
    # wikitext comes from the valid split only (the test split is for perplexity)
    assert SOURCES["wikitext2"].local == ("calib/wikitext2/wiki.valid.tokens",)


def test_gsm8k_train_disjoint_from_test(shared):
    docs = SOURCES["gsm8k"].documents()
    test_q = {r["question"].strip() for r in _jsonl(shared / "eval/gsm8k/test.jsonl")}
    calib_q = {d.split("\nAnswer: ")[0][len("Question: "):].strip() for d in docs}
    assert len(calib_q) == 7473
    assert not (test_q & calib_q)
    joined = "\n".join(docs)
    assert not any(q in joined for q in list(test_q)[:300])


@pytest.mark.parametrize("name,eval_file", [("arc-easy", "arc_easy"), ("arc-challenge", "arc_challenge")])
def test_arc_train_drops_test_questions(shared, name, eval_file):
    src = SOURCES[name]
    raw = _jsonl(shared / src.local[0])
    test = _jsonl(shared / f"eval/{eval_file}/test.jsonl")
    test_q = {_norm(r["question"]) for r in test}
    test_ins = {r["instruction"] for r in test}
    verbatim = [r for r in raw if r["instruction"] in test_ins]
    if name == "arc-easy":
        assert len(verbatim) == 2  # MANIFEST: two verbatim repeats of test items in ARC-Easy train
    docs = src.documents()
    kept_q = {_norm(d.split("\nAnswer: ")[0][len("Question: "):].split("\nA. ")[0]) for d in docs}
    assert not (kept_q & test_q)
    for r in verbatim:
        assert adapters_mc(r) not in docs
    assert len(docs) == len(raw) - sum(_norm(adapters_question(r)) in test_q for r in raw)
    # the composite commonsense source applies the same hold-out
    comp = set(SOURCES["commonsense"].documents())
    assert not any(adapters_mc(r) in comp for r in verbatim)


def test_obqa_boolq_disjoint_from_eval(shared):
    for name, path, key in [("obqa", "eval/openbookqa/test.jsonl", lambda r: r["query"]),
                            ("boolq", "eval/boolq/dev.jsonl", lambda r: re.search(r"Question:\s*(.*?)(\n|$)", r["query"]).group(1))]:
        ev = {_norm(key(r)) for r in _jsonl(shared / path)}
        docs = SOURCES[name].documents()
        qs = {_norm(d.split("\nAnswer: ")[0][len("Question: "):].split("\nA. ")[0]) for d in docs}
        assert not (qs & ev), name


def test_codealpaca_disjoint_from_mbpp_and_humaneval(shared):
    docs = SOURCES["codealpaca"].documents()
    instructions = {_norm(d.split("\n\n")[0].removeprefix("Instruction:\n")) for d in docs}
    mbpp = _jsonl(shared / "eval/mbpp/test.jsonl")
    assert not any(_norm(r["text"]) in instructions for r in mbpp)
    docs = "\n".join(docs)
    he = _jsonl(shared / "eval/humaneval/HumanEval.jsonl")
    assert not any(r["canonical_solution"].strip() in docs for r in he if len(r["canonical_solution"].strip()) > 80)


def test_version_changes_with_file(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "hello world"}\n')
    src = Source("tmp", "User", "t", local=(str(f),))
    v1 = src.version
    assert src.documents() == ["hello world"]
    f.write_text('{"text": "hello world"}\n{"text": "and more"}\n')
    assert src.version != v1
    assert src.documents() == ["hello world", "and more"]


def test_record_text_fields_and_errors(tmp_path):
    assert files.record_text({"question": "q?", "answer": "a", "id": 3}) == "q?\na"
    assert files.record_text({"text": "t", "question": "q"}) == "t"
    assert files.record_text({"a": "x", "b": 1, "c": "y"}) == "x\ny"
    assert files.record_text({"q": "x", "sol": "y"}, ("sol",)) == "y"
    with pytest.raises(CalmixError, match="no field 'zz'"):
        files.record_text({"q": "x"}, ("zz",), "f:1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(CalmixError, match=r"bad.jsonl line 2"):
        files.load_path(bad)
    binary = tmp_path / "x.txt"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(CalmixError, match="UTF-8|binary"):
        files.load_path(binary)


def test_chunk_text_keeps_all_text():
    text = "\n\n".join(f"para {i} " + "x" * 300 for i in range(200))
    chunks = files.chunk_text(text, max_chars=2000)
    assert all(len(c) <= 2000 for c in chunks)
    assert "\n\n".join(chunks) == text


HUB_RECORDS = {  # one record per source in the hub dataset's published schema
    "arc-easy": {"question": "Which is a gas?", "choices": {"text": ["rock", "steam"], "label": ["A", "B"]}, "answerKey": "B"},
    "obqa": {"question_stem": "Sun is a", "choices": {"text": ["star", "moon"], "label": ["A", "B"]}, "answerKey": "A"},
    "boolq": {"question": "is water wet", "answer": True, "passage": "Water is a liquid."},
    "csqa": {"question": "Where is a fork kept?", "choices": {"label": ["A", "B"], "text": ["drawer", "sky"]}, "answerKey": "A"},
    "winogrande": {"sentence": "The cup broke because _ was fragile.", "option1": "the cup", "option2": "the floor", "answer": "1"},
    "hellaswag": {"ctx": "A man picks up a ball.", "endings": ["He throws it.", "He eats it."], "label": "0"},
    "gsm8k": {"question": "2+2?", "answer": "2+2=4\n#### 4"},
    "metamath": {"query": "What is 3*3?", "response": "3*3=9. The answer is: 9", "type": "GSM_Rephrased"},
    "math": {"problem": "Solve x+1=2.", "solution": "x=\\boxed{1}", "level": "Level 1", "type": "Algebra"},
    "pubmedqa": {"question": "Does X help?", "context": {"contexts": ["Background.", "Results."]},
                 "long_answer": "It helps.", "final_decision": "yes"},
    "alpaca": {"instruction": "Say hi.", "input": "", "output": "hi"},
    "codealpaca": {"instruction": "Add numbers.", "input": "1, 2", "output": "def add(a, b): return a + b"},
    "dailydialog": {"dialog": ["Hi there.", "Hello!"]},
}
HUB_EXPECT = {"arc-easy": "Answer: B. steam", "obqa": "Answer: A. star", "boolq": "Answer: true",
              "csqa": "Answer: A. drawer", "winogrande": "because the cup was", "hellaswag": "ball. He throws it.",
              "gsm8k": "#### 4", "metamath": "Question: What is 3*3?\nAnswer: 3*3=9", "math": "\\boxed{1}",
              "pubmedqa": "It helps. yes", "alpaca": "Response:\nhi", "codealpaca": "Input:\n1, 2",
              "dailydialog": "A: Hi there.\nB: Hello!"}


@pytest.mark.parametrize("name", sorted(HUB_RECORDS))
def test_hub_templates_on_published_schema(name):
    ref = SOURCES[name].hub
    text = ref.template(HUB_RECORDS[name]) if ref.template else files.record_text(HUB_RECORDS[name], ref.fields)
    assert HUB_EXPECT[name] in text, text


def test_bigbench_sources_from_the_sdist():
    if bigbench.sdist() is None:
        pytest.skip("BIG-bench sdist not in the calmix cache (pip download --no-deps --no-binary :all: bigbench==1.0.0)")
    sq = get_source("bb-strategyqa").documents()
    assert len(sq) == 2290 and sq[0].startswith("Question: ") and "\nAnswer: " in sq[0]
    chat = get_source("bb-topical-chat").documents()
    assert 500 < len(chat) < 5000  # one document per conversation, not one per growing prefix
    assert chat[0].count("\nagent_") >= 3
    assert len({c[:200] for c in chat}) == len(chat)
    stories = get_source("bb-ropes-stories").documents()
    assert all("\n\nStory: " in d for d in stories)
    # the evaluation suite's BIG-bench tasks are different tasks
    assert not set(BIGBENCH_EVAL_TASKS) & set(BIGBENCH_TASKS)
