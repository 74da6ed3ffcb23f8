"""`calmix prune`, `calmix ppl`, `calmix sparsity` through the CLI: outputs, records and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from calmix.cli import main


@pytest.fixture()
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog {i} times." for i in range(200)))
    return path


def test_prune_writes_a_loadable_folder_with_a_record(tiny_dir, text_file, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pruned"
    rc = main(["prune", "--model", str(tiny_dir), "--method", "sparsegpt", "--sparsity", "0.6", "--calib",
               str(text_file), "--nsamples", "4", "--seqlen", "32", "--seed", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    model = AutoModelForCausalLM.from_pretrained(out)
    q = model.model.layers[0].self_attn.q_proj.weight
    assert float((q == 0).float().mean()) == pytest.approx(0.6, abs=1e-3)
    rec = json.loads((out / "calmix.json").read_text())
    assert rec["config"]["method"] == "sparsegpt" and rec["config"]["sparsity"] == 0.6
    assert rec["overall_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert len(rec["layers"]) == 14 and all("rel_error" in r for r in rec["layers"])
    assert {"load", "calibration", "prune", "save"} <= set(rec["timings_s"])
    stages = {k: rec["engine_timings"][k] for k in ("capture", "statistics", "solve", "replay", "error")}
    assert all(v > 0 for v in stages.values()) and sum(stages.values()) <= rec["engine_timings"]["total"]
    assert rec["config"]["sequential"] == "linear" and rec["config"]["dense_inputs"] is False
    assert rec["peak_rss_mb"] > 0 and rec["versions"]["torch"]
    assert rec["calib"]["nsamples"] == 4 and rec["calib"]["seqlen"] == 32
    assert not list(tmp_path.glob(".pruned.*"))  # no temp folder left
    rc = main(["sparsity", str(out)])
    assert rc == 0 and "overall sparsity 0.599" in capsys.readouterr().out


def test_prune_nm_pattern_and_stdlib_calibration(tiny_dir, tmp_path, capsys):
    out = tmp_path / "nm"
    rc = main(["prune", "--model", str(tiny_dir), "--method", "wanda", "--pattern", "2:4", "--calib", "stdlib",
               "--nsamples", "2", "--seqlen", "32", "--sequential", "linear", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((out / "calmix.json").read_text())
    assert rec["overall_sparsity"] == pytest.approx(0.5)
    assert rec["config"]["sequential"] == "linear" and all(r["rel_error"] > 0 for r in rec["layers"])


def test_same_seed_same_saved_weights(tiny_dir, text_file, tmp_path):
    from safetensors.torch import load_file

    outs = []
    for name in ("a", "b"):
        assert main(["prune", "--model", str(tiny_dir), "--calib", str(text_file), "--nsamples", "3",
                     "--seqlen", "16", "--seed", "4", "--out", str(tmp_path / name)]) == 0
        outs.append(load_file(tmp_path / name / "model.safetensors"))
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


@pytest.mark.parametrize("extra,needle", [
    (["--method", "obs"], "unknown pruning method"),
    (["--sparsity", "1.0"], "sparsity"),
    (["--sparsity", "-0.2"], "sparsity"),
    (["--pattern", "4:2"], "N:M"),
    (["--pattern", "2:5"], "divide"),
    (["--pattern", "two-four"], "pattern"),
])
def test_bad_pruning_options_exit_2_without_output(extra, needle, tiny_dir, text_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["prune", "--model", str(tiny_dir), "--calib", str(text_file), "--nsamples", "2", "--seqlen", "16",
               "--out", str(out), *extra])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "calmix: error:" in line]
    assert rc == 2 and len(errors) == 1 and needle in errors[0]
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_help_lists_the_registered_methods_and_models(capsys):
    from calmix.models import BUILTIN_MODELS

    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--method METHOD sparsegpt | wanda | magnitude (default sparsegpt)" in text
    assert "a .gguf file, or default, smollm2-135m, gemma3-270m" in text and list(BUILTIN_MODELS) == [
        "default", "smollm2-135m", "gemma3-270m"]


def test_missing_model_path(tmp_path, capsys):
    rc = main(["prune", "--model", str(tmp_path / "nope"), "--calib", "stdlib", "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_folder_without_config(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["prune", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "config.json" in capsys.readouterr().err


def test_non_decoder_model(tmp_path, tiny_tokenizer, capsys):
    from transformers import BertConfig, BertModel

    path = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    rc = main(["prune", "--model", str(path), "--calib", "stdlib", "--out", str(tmp_path / "o")])
    assert rc == 2 and "not a causal decoder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_empty_and_too_short_calibration_data(tiny_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    rc = main(["prune", "--model", str(tiny_dir), "--calib", str(empty), "--nsamples", "2", "--seqlen", "16",
               "--out", str(tmp_path / "o1")])
    assert rc == 2 and capsys.readouterr().err.splitlines()[-1].startswith("calmix: error:")
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    rc = main(["prune", "--model", str(tiny_dir), "--calib", str(short), "--nsamples", "2", "--seqlen", "512",
               "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert rc == 2 and "token" in err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_unwritable_output(tiny_dir, text_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["prune", "--model", str(tiny_dir), "--calib", str(text_file), "--nsamples", "2", "--seqlen", "16",
               "--out", str(blocker / "sub")])
    assert rc == 2 and "calmix: error:" in capsys.readouterr().err
    rc = main(["prune", "--model", str(tiny_dir), "--calib", str(text_file), "--nsamples", "2", "--seqlen", "16",
               "--out", str(blocker)])
    assert rc == 2 and "not a folder" in capsys.readouterr().err


def test_ppl_on_a_text_file(tiny_dir, text_file, tmp_path, capsys):
    out = tmp_path / "ppl.json"
    rc = main(["ppl", "--model", str(tiny_dir), "--data", str(text_file), "--seqlen", "64", "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    # A random model is close to uniform over its vocabulary: perplexity near the vocabulary size.
    vocab = json.loads((tiny_dir / "config.json").read_text())["vocab_size"]
    assert 0.25 * vocab < rec["ppl"] < 4 * vocab and rec["windows"] >= 1


def test_perplexity_equals_manual_cross_entropy(tiny_model):
    import math

    from calmix.evals.ppl import perplexity

    ids = torch.randint(0, tiny_model.config.vocab_size, (1, 70), generator=torch.Generator().manual_seed(0))
    res = perplexity(tiny_model, ids, seqlen=32, progress=False)
    assert res["windows"] == 2  # the 6-token tail is dropped
    nll = []
    for w in ids[0, :64].view(2, 32):
        logp = torch.log_softmax(tiny_model(w[None]).logits[0, :-1].double(), -1)
        nll += [-float(logp[i, w[i + 1]]) for i in range(31)]
    assert res["ppl"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)


def test_default_model_end_to_end(tmp_path, shared, capsys):
    """The real default model at small settings: prune, save, reload, WikiText-2 perplexity."""
    out = tmp_path / "smol"
    rc = main(["prune", "--model", "default", "--method", "sparsegpt", "--sparsity", "0.5", "--calib", "c4",
               "--nsamples", "8", "--seqlen", "128", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    rc = main(["ppl", "--model", str(out), "--seqlen", "128", "--max-windows", "8", "--out", str(tmp_path / "p.json")])
    assert rc == 0
    pruned = json.loads((tmp_path / "p.json").read_text())["ppl"]
    rc = main(["ppl", "--model", "default", "--seqlen", "128", "--max-windows", "8", "--out", str(tmp_path / "d.json")])
    dense = json.loads((tmp_path / "d.json").read_text())["ppl"]
    assert 5 < dense < pruned < 10 * dense
