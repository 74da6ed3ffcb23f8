"""Set building: spec parsing, seeded windows, exact mix proportions, hub folder path, saved sets, cache."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import pytest
import torch

from calmix.calib import CalibSet, build_calib
from calmix.calib import build as B
from calmix.data import hub
from calmix.errors import CalmixError

WORDS_A = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"]
WORDS_B = ["seven", "eight", "nine", "three", "four", "five", "six", "two"]


def _corpus(path, words, ndocs=60, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(ndocs):
            fh.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(80))}) + "\n")
    return path


@pytest.fixture()
def two_files(tmp_path):
    return _corpus(tmp_path / "a.jsonl", WORDS_A, seed=1), _corpus(tmp_path / "b.jsonl", WORDS_B, seed=2)


# ---------------------------------------------------------------------------------------- parsing

def test_parse_spec_forms(tmp_path, two_files):
    a, b = two_files
    assert B.parse_spec("c4").parts[0][0].kind == "source"
    p = B.parse_spec(f"mix:c4=1,file:{a}=2.5,gsm8k=0")
    assert [(x.label, w) for x, w in p.parts] == [("c4", 1), (f"file:{a}", Fraction(5, 2))]
    assert B.parse_spec(str(a)).parts[0][0].kind == "file"
    f = B.parse_spec(f"file:{a}:question+answer").parts[0][0]
    assert f.fields == ("question", "answer") and f.path == str(a)
    h = B.parse_spec("hub:org/data:cfg:validation:body").parts[0][0]
    assert (h.path, h.config, h.split, h.fields) == ("org/data", "cfg", "validation", ("body",))
    g = B.parse_spec("igsp:pool=4,strata=4").parts[0][0]
    assert g.kind == "gen" and dict(g.params) == {"pool": "4", "strata": "4"}
    assert B.parse_spec("selfcal").needs_model
    u = B.parse_spec("uniform-offline")
    assert u.preset == "uniform-offline" and [x.name for x, _ in u.parts] == ["pydoc-topics", "rg-logic", "stdlib", "gsm-symbolic"]


@pytest.mark.parametrize("spec,msg", [
    ("nosuch", "unknown calibration source 'nosuch'; known: .*c4"),
    ("mix:c4=-1,gsm8k=1", "negative weight"),
    ("mix:c4=0,gsm8k=0", "all mix weights are zero"),
    ("mix:c4=x", "bad weight"),
    ("mix:c4", "bad mix item"),
    ("mix:c4=1,c4=2", "appears twice"),
    ("file:/no/such/file.jsonl", "does not exist"),
    ("selfcal:temperature", "bad parameter"),
    ("", "empty calibration spec"),
])
def test_parse_spec_errors(spec, msg):
    with pytest.raises(CalmixError, match=msg):
        B.parse_spec(spec)


def test_uniform_preset_prefers_metamath_then_gsm8k(shared, monkeypatch):
    monkeypatch.setenv("CALMIX_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        parts = [p.name for p, _ in B.parse_spec("uniform").parts]
    finally:
        hub.hub_reachable.cache_clear()
    assert parts == ["c4", "commonsense", "codealpaca", "gsm8k"]
    names = [p.name for p, _ in B.parse_spec("all").parts]
    assert "metamath" not in names and "commonsense" not in names and len(names) >= 15


def test_largest_remainder_exact():
    assert B.largest_remainder([1, 2], 8) == [3, 5]
    assert B.largest_remainder([1, 1, 1], 10) == [4, 3, 3]
    assert B.largest_remainder([Fraction(1), Fraction(0), Fraction(3)], 7) == [2, 0, 5]
    assert B.largest_remainder([0.1, 0.2, 0.7], 10) == [1, 2, 7]
    rng = random.Random(0)
    for _ in range(200):
        ws = [rng.randint(0, 9) for _ in range(rng.randint(1, 6))]
        if sum(ws) == 0:
            continue
        n = rng.randint(1, 300)
        got = B.largest_remainder(ws, n)
        assert sum(got) == n
        assert all(abs(g - w * n / sum(ws)) < 1 for g, w in zip(got, ws))


# ---------------------------------------------------------------------------------------- windows

def test_windows_are_slices_of_eos_joined_stream(default_tokenizer, tmp_path):
    docs = ["the cat sat on the mat", "a dog ran far away quickly", "one two three four five six"]
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cs = build_calib(f"file:{f}", default_tokenizer, 6, 5, seed=3, use_cache=False)
    eos = default_tokenizer.eos_token_id
    comp = cs.card["components"][0]
    order = list(range(3))
    random.Random(B.derive_seed(3, f"file:{f}")).shuffle(order)
    stream = []
    for j in order:  # oracle: shuffled docs, no special tokens, EOS after each
        stream += default_tokenizer(docs[j], add_special_tokens=False)["input_ids"] + [eos]
    assert comp["stream_tokens"] == len(stream)
    for row, start in zip(cs.input_ids.tolist(), cs.card["row_starts"]):
        assert row == stream[start:start + 5]
    assert eos in cs.input_ids.flatten().tolist() or len(stream) < 10
    bos = default_tokenizer.bos_token_id
    if bos is not None and bos != eos:
        assert bos not in cs.input_ids.flatten().tolist()


def test_same_seed_same_tensor_different_seed_differs(default_tokenizer, two_files):
    a, _ = two_files
    x = build_calib(str(a), default_tokenizer, 8, 32, seed=0, use_cache=False)
    y = build_calib(str(a), default_tokenizer, 8, 32, seed=0, use_cache=False)
    z = build_calib(str(a), default_tokenizer, 8, 32, seed=1, use_cache=False)
    assert x.input_ids.shape == (8, 32) and x.input_ids.dtype == torch.long
    assert torch.equal(x.input_ids, y.input_ids)
    assert not torch.equal(x.input_ids, z.input_ids)


def test_mix_proportions_exact_and_provenance(default_tokenizer, two_files):
    a, b = two_files
    vocab_a = {t for w in WORDS_A for t in default_tokenizer(" " + w, add_special_tokens=False)["input_ids"]}
    vocab_b = {t for w in WORDS_B for t in default_tokenizer(" " + w, add_special_tokens=False)["input_ids"]}
    vocab_a |= {t for w in WORDS_A for t in default_tokenizer(w, add_special_tokens=False)["input_ids"]}
    vocab_b |= {t for w in WORDS_B for t in default_tokenizer(w, add_special_tokens=False)["input_ids"]}
    assert not (vocab_a & vocab_b)
    cs = build_calib(f"mix:{a}=1,{b}=2", default_tokenizer, 10, 16, seed=0, use_cache=False)
    la, lb = f"file:{a}", f"file:{b}"
    assert cs.card["window_counts"] == {la: 3, lb: 7}
    assert [c["windows"] for c in cs.card["components"]] == [3, 7]
    assert cs.card["row_sources"] == [la] * 3 + [lb] * 7
    eos = default_tokenizer.eos_token_id
    for row, src in zip(cs.input_ids.tolist(), cs.card["row_sources"]):
        toks = set(row) - {eos}
        assert toks <= (vocab_a if src == la else vocab_b), src
    # each component draws the same windows as that source alone with the same seed
    alone = build_calib(str(b), default_tokenizer, 7, 16, seed=0, use_cache=False)
    assert torch.equal(alone.input_ids, cs.input_ids[3:])


def test_real_mix_counts(default_tokenizer, shared):
    cs = build_calib("mix:c4=1,gsm8k=2,stdlib=1", default_tokenizer, 9, 64, seed=0, use_cache=False)
    assert cs.card["window_counts"] == {"c4": 2, "gsm8k": 5, "stdlib": 2}
    text = default_tokenizer.decode(cs.input_ids[2])
    assert "Question" in text or "Answer" in text or "=" in text or "<<" in text


def test_too_small_source_names_token_counts(default_tokenizer, tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("just a few words here")
    with pytest.raises(CalmixError, match=r"has only \d+ tokens .*a window needs 512"):
        build_calib(str(f), default_tokenizer, 4, 512, use_cache=False)


def test_overlapping_windows_allowed_and_recorded(default_tokenizer, tmp_path):
    f = tmp_path / "small.txt"
    f.write_text(" ".join(WORDS_A * 20))
    cs = build_calib(str(f), default_tokenizer, 20, 64, seed=0, use_cache=False)
    assert cs.card["components"][0]["overlap"] is True


def test_stream_stops_after_budget(default_tokenizer, tmp_path):
    f = _corpus(tmp_path / "big.jsonl", WORDS_A, ndocs=400)
    cs = build_calib(str(f), default_tokenizer, 2, 16, seed=0, use_cache=False)
    comp = cs.card["components"][0]
    assert comp["docs_total"] == 400
    assert comp["docs_used"] < 10 and comp["stream_tokens"] >= B.TOKEN_BUDGET_FACTOR * 2 * 16


# ------------------------------------------------------------------------------------- hub path

def test_hub_folder_in_hub_layout(default_tokenizer, tmp_path):
    pytest.importorskip("datasets")
    import pandas as pd

    root = tmp_path / "myorg_data"
    (root / "data").mkdir(parents=True)
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}.", "id": i} for i in range(300)]
    pd.DataFrame(rows).to_parquet(root / "data" / "train-00000-of-00001.parquet")
    docs = hub.load_hub(str(root), None, "train", ("question", "answer"))
    assert docs[:2] == ["What is 0 plus 0?\nIt is 0.", "What is 1 plus 1?\nIt is 2."]
    cs = build_calib(f"hub:{root}::train:question+answer", default_tokenizer, 4, 32, seed=0, use_cache=False)
    assert cs.input_ids.shape == (4, 32) and cs.card["components"][0]["origin"] == "hub"
    assert "plus" in default_tokenizer.decode(cs.input_ids[0])
    # jsonl in the hub layout and the auto field choice (question + answer)
    j = tmp_path / "jsonhub"
    (j / "data").mkdir(parents=True)
    (j / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    assert hub.load_hub(str(j))[0] == "What is 0 plus 0?\nIt is 0."


def test_hub_offline_is_a_clear_error(default_tokenizer, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("CALMIX_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(CalmixError, match="hub dataset some-org/some-data is unavailable|not available here"):
            build_calib("hub:some-org/some-data", default_tokenizer, 2, 16, use_cache=False)
        with pytest.raises(CalmixError, match="unavailable"):
            hub.load_hub("some-org/some-data")
    finally:
        hub.hub_reachable.cache_clear()


# ------------------------------------------------------------------------------------ saved sets

def test_saved_sets_as_specs(default_tokenizer, tmp_path, two_files):
    a, _ = two_files
    cs = build_calib(str(a), default_tokenizer, 3, 8, seed=0, use_cache=False)
    cs.save(tmp_path / "s.pt")
    back = build_calib(str(tmp_path / "s.pt"), default_tokenizer, 3, 8)
    assert torch.equal(back.input_ids, cs.input_ids) and back.card["window_counts"] == cs.card["window_counts"]
    (tmp_path / "rows.json").write_text(json.dumps(cs.input_ids.tolist()))
    assert B.parse_spec(str(tmp_path / "rows.json")).kind == "set"
    assert torch.equal(build_calib(str(tmp_path / "rows.json"), default_tokenizer, 3, 8).input_ids, cs.input_ids)
    torch.save(cs.input_ids, tmp_path / "plain.pt")
    assert torch.equal(build_calib(str(tmp_path / "plain.pt"), default_tokenizer, 3, 8).input_ids, cs.input_ids)


# ----------------------------------------------------------------------------------------- cache

def test_cache_hit_identical_and_keyed(default_tokenizer, tmp_path, two_files, monkeypatch):
    a, b = two_files
    cache = tmp_path / "cache"
    first = build_calib(str(a), default_tokenizer, 4, 16, seed=0, cache_dir=cache)
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 1 and (cache / (files[0].name + ".json")).is_file()
    assert first.card["cache_key"] == files[0].stem

    def boom(*args, **kw):
        raise AssertionError("cache miss: the set was rebuilt")

    monkeypatch.setattr(B, "token_stream", boom)
    hit = build_calib(str(a), default_tokenizer, 4, 16, seed=0, cache_dir=cache)
    assert torch.equal(hit.input_ids, first.input_ids)
    with pytest.raises(AssertionError, match="cache miss"):
        build_calib(str(a), default_tokenizer, 4, 17, seed=0, cache_dir=cache)  # seqlen changes the key
    with pytest.raises(AssertionError, match="cache miss"):
        build_calib(str(a), default_tokenizer, 4, 16, seed=1, cache_dir=cache)
    with pytest.raises(AssertionError, match="cache miss"):
        build_calib(f"mix:{a}=1,{b}=1", default_tokenizer, 4, 16, seed=0, cache_dir=cache)
    monkeypatch.undo()
    _corpus(a, WORDS_A, ndocs=61)  # the data changed: version changes, so does the key
    again = build_calib(str(a), default_tokenizer, 4, 16, seed=0, cache_dir=cache)
    assert again.card["cache_key"] != first.card["cache_key"]
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".*"))


# ------------------------------------------------------------------------------------ generation

def test_generated_kinds_need_model(default_tokenizer):
    with pytest.raises(CalmixError, match="needs --model"):
        build_calib("selfcal", default_tokenizer, 2, 8, use_cache=False)
    with pytest.raises(CalmixError, match="needs --model"):
        build_calib("mix:c4=1,sgs=1", default_tokenizer, 2, 8, use_cache=False)


def test_generated_part_delegates_and_mixes(tiny_tokenizer, tiny_model, two_files, monkeypatch):
    """The generators themselves are tested in tests/calib/generated; here a stand-in checks the delegation contract."""
    a, _ = two_files
    calls = []

    def fake_generate_set(kind, model, tokenizer, nsamples, seqlen, seed=0, device="cpu", params=None):
        calls.append((kind, nsamples, seqlen, dict(params or {})))
        if params and params.get("empty"):
            return None
        return CalibSet(torch.full((nsamples, seqlen), 7), None, {"kind": kind})

    monkeypatch.setattr(B, "generate_set", fake_generate_set)
    cs = build_calib(f"mix:{a}=1,igsp:pool=4=3", tiny_tokenizer, 8, 16, seed=0, model=tiny_model, use_cache=False)
    assert calls == [("igsp", 6, 16, {"pool": "4"})]
    assert cs.card["window_counts"] == {f"file:{a}": 2, "igsp:pool=4": 6}
    assert (cs.input_ids[2:] == 7).all() and not (cs.input_ids[:2] == 7).all()
    with pytest.raises(CalmixError, match="returned nothing"):
        build_calib("selfcal:empty=1", tiny_tokenizer, 2, 8, model=tiny_model, use_cache=False)


# ------------------------------------------------------------------------------------ BOS in windows

def test_bos_yes_replaces_the_first_token_of_the_same_draws(tiny_tokenizer, tmp_path, two_files):
    a, _ = two_files
    plain = build_calib(str(a), tiny_tokenizer, 4, 16, seed=0, bos="no", cache_dir=tmp_path)
    with_bos = build_calib(str(a), tiny_tokenizer, 4, 16, seed=0, bos="yes", cache_dir=tmp_path)
    assert (with_bos.input_ids[:, 0] == 1).all() and (plain.input_ids[:, 0] != 1).all()
    assert torch.equal(with_bos.input_ids[:, 1:], plain.input_ids[:, 1:])
    assert with_bos.card["row_starts"] == plain.card["row_starts"]
    assert with_bos.card["bos"] == {"option": "yes", "token": 1} and plain.card["bos"]["token"] is None
    assert with_bos.card["cache_key"] != plain.card["cache_key"]


def test_bos_auto_follows_the_tokenizer_and_keeps_the_plain_key(tiny_tokenizer, tiny_bos_tokenizer, tmp_path,
                                                                two_files):
    a, _ = two_files
    auto = build_calib(str(a), tiny_tokenizer, 4, 16, seed=0, bos="auto", cache_dir=tmp_path)
    plain = build_calib(str(a), tiny_tokenizer, 4, 16, seed=0, bos="no", cache_dir=tmp_path)
    assert torch.equal(auto.input_ids, plain.input_ids) and auto.card["bos"]["token"] is None
    # the key of a set without BOS is the one every set had before the option: the same fields, hashed alike
    legacy = {"build": B.BUILD_VERSION, "spec": f"file:{a}", "components": [[f"file:{a}", "1", 4,
                                                                               B.parse_spec(str(a)).parts[0][0].source().version]],
              "tokenizer": B.tokenizer_info(tiny_tokenizer), "nsamples": 4, "seqlen": 16, "seed": 0}
    from calmix.fingerprint import digest

    assert auto.card["cache_key"] == plain.card["cache_key"] == digest(legacy, 24)
    gemma_like = build_calib(str(a), tiny_bos_tokenizer, 4, 16, seed=0, bos="auto", use_cache=False)
    assert (gemma_like.input_ids[:, 0] == 1).all() and gemma_like.card["bos"]["token"] == 1


def test_bos_option_errors(tiny_tokenizer):
    from types import SimpleNamespace

    with pytest.raises(CalmixError, match="must be one of auto, yes, no"):
        B.resolve_bos("maybe", tiny_tokenizer)
    with pytest.raises(CalmixError, match="no BOS token"):
        B.resolve_bos("yes", SimpleNamespace(bos_token_id=None))
    assert B.resolve_bos("no", tiny_tokenizer) is None and B.resolve_bos("yes", tiny_tokenizer) == 1


def test_generator_version_changes_the_cache_key(tiny_tokenizer, monkeypatch):
    """A generator whose algorithm changed (its `version` attribute) gets new cache keys: older sets are not reused;
    a generator at version 1 keeps the key it always had."""
    from calmix.calib.generated.common import GENERATORS
    from calmix.fingerprint import digest
    from calmix.models import tiny_llama

    parsed = B.parse_spec("selfcal")
    model = tiny_llama()
    base = B.cache_key(parsed, [4], tiny_tokenizer, 4, 16, 0, model=model)
    comps = [[parsed.parts[0][0].label, "1", 4, "model"]]
    legacy = {"build": B.BUILD_VERSION, "spec": parsed.canonical, "components": comps,
              "tokenizer": B.tokenizer_info(tiny_tokenizer), "nsamples": 4, "seqlen": 16, "seed": 0,
              "model": B.model_info(model), "device": "cpu"}
    assert base == digest(legacy, 24)
    monkeypatch.setattr(GENERATORS.get("selfcal"), "version", 2, raising=False)
    assert B.cache_key(parsed, [4], tiny_tokenizer, 4, 16, 0, model=model) != base
    assert GENERATORS.get("igsp").version >= 2  # IGSP's pool sampling changed once
