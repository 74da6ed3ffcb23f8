"""CLI: `calmix sources`, `calmix calib build`, `calmix calib metrics`, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import re

import pytest
import torch

from calmix.calib import CalibSet
from calmix.calib.sources import SOURCES
from calmix.cli import main


@pytest.fixture()
def data_file(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text("".join(json.dumps({"text": f"document number {i} talks about topic {i % 7} at length. " * 5}) + "\n"
                         for i in range(40)))
    return f


def test_sources_lists_every_source(capsys):
    assert main(["sources"]) == 0
    out = capsys.readouterr().out
    for name, src in SOURCES.items():
        line = next(l for l in out.splitlines() if l.split()[:1] == [name])
        assert src.dimension in line and ("yes" in line or "no" in line)
    assert main(["sources", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(SOURCES) and all("available" in r for r in rows)


def test_build_writes_set_card_and_record(tmp_path, data_file, capsys, default_tokenizer):
    out = tmp_path / "out" / "set.pt"
    rc = main(["calib", "build", f"mix:{data_file}=1,file:{data_file}:text=3", "--nsamples", "8", "--seqlen", "32",
               "--seed", "5", "--out", str(out), "--no-cache"])
    assert rc == 0, capsys.readouterr().err
    cs = CalibSet.load(out)
    assert cs.input_ids.shape == (8, 32)
    card = json.loads((tmp_path / "out" / "set.pt.json").read_text())
    assert card["seed"] == 5 and list(card["window_counts"].values()) == [2, 6]
    assert card["tokenizer"]["vocab_size"] == len(default_tokenizer)
    rec = json.loads((tmp_path / "out" / "set.run.json").read_text())
    assert rec["command"] == "calib build" and rec["config"]["nsamples"] == 8
    assert "8 x 32" in capsys.readouterr().out
    # the built file is itself a spec
    out2 = tmp_path / "again.pt"
    assert main(["calib", "build", str(out), "--nsamples", "8", "--seqlen", "32", "--out", str(out2)]) == 0
    assert torch.equal(CalibSet.load(out2).input_ids, cs.input_ids)


@pytest.mark.parametrize("args,msg", [
    (["nosuch"], "unknown calibration source 'nosuch'; known:"),
    (["mix:c4=-1,gsm8k=1"], "negative weight"),
    (["mix:c4=0"], "all mix weights are zero"),
    (["selfcal", "--model", "/no/such/model"], "not found|does not exist|model"),
    (["file:/no/such.jsonl"], "does not exist"),
])
def test_build_bad_input_exit_2_nothing_written(tmp_path, capsys, args, msg):
    out = tmp_path / "o" / "x.pt"
    rc = main(["calib", "build", *args, "--nsamples", "4", "--seqlen", "16", "--out", str(out), "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("calmix: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(msg, err), err
    assert not out.exists() and (not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir()))


def test_build_small_and_malformed_sources(tmp_path, capsys):
    small = tmp_path / "small.txt"
    small.write_text("only a handful of tokens")
    out = tmp_path / "x.pt"
    assert main(["calib", "build", str(small), "--nsamples", "2", "--seqlen", "256", "--out", str(out)]) == 2
    assert re.search(r"has only \d+ tokens", capsys.readouterr().err)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "fine"}\n{oops}\n')
    assert main(["calib", "build", str(bad), "--nsamples", "2", "--seqlen", "4", "--out", str(out)]) == 2
    assert "bad.jsonl line 3" in capsys.readouterr().err
    assert main(["calib", "build", str(small), "--nsamples", "0", "--seqlen", "4", "--out", str(out)]) == 2
    assert main(["calib", "build", str(small), "--nsamples", "1", "--seqlen", "4", "--out", str(tmp_path / "x.txt")]) == 2
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


def test_metrics_on_built_set_with_tiny_model(tmp_path, tiny_dir, data_file, capsys):
    out = tmp_path / "m.json"
    rc = main(["calib", "metrics", str(data_file), "--model", str(tiny_dir), "--nsamples", "3", "--seqlen", "16",
               "--out", str(out), "--no-cache"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert len(res["samples"]) == 3 and res["set"] and res["card"]["nsamples"] == 3
    assert json.loads((tmp_path / "m.run.json").read_text())["command"] == "calib metrics"
    assert "metric" in capsys.readouterr().out


def test_selfcal_through_cli_with_tiny_model(tmp_path, tiny_dir, capsys):
    out = tmp_path / "self.pt"
    rc = main(["calib", "build", "selfcal", "--model", str(tiny_dir), "--nsamples", "2", "--seqlen", "8",
               "--out", str(out), "--no-cache"])
    assert rc == 0, capsys.readouterr().err
    cs = CalibSet.load(out)
    assert cs.input_ids.shape == (2, 8)
    assert json.loads((tmp_path / "self.pt.json").read_text())["model"]["params"] > 0


def test_build_bos_option_is_recorded(tmp_path, tiny_dir, data_file, capsys):
    import torch

    sets = {}
    for bos in ("no", "yes"):
        out = tmp_path / f"{bos}.pt"
        rc = main(["calib", "build", str(data_file), "--model", str(tiny_dir), "--nsamples", "3", "--seqlen", "16",
                   "--bos", bos, "--out", str(out), "--no-cache"])
        assert rc == 0, capsys.readouterr().err
        sets[bos] = torch.load(out, weights_only=True)
        assert json.loads(out.with_suffix(".pt.json").read_text())["bos"]["option"] == bos
    assert (sets["yes"]["input_ids"][:, 0] == 1).all()
    assert torch.equal(sets["yes"]["input_ids"][:, 1:], sets["no"]["input_ids"][:, 1:])
    with pytest.raises(SystemExit) as err:  # argparse rejects the choice
        main(["calib", "build", str(data_file), "--bos", "maybe", "--out", str(tmp_path / "x.pt")])
    assert err.value.code == 2
