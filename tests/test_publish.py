"""calmix.publish: the model card of a pruned folder, bit-packed masks, and the upload to a local stand-in hub.

The upload runs huggingface_hub's real client (HfApi.create_repo + upload_folder) against `HubStandIn`, a small
http.server on 127.0.0.1 that implements the endpoints the client calls and keeps what it receives."""

from __future__ import annotations

import base64
import json
import re
import shlex
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import yaml

from calmix.cli import build_parser, main
from calmix.errors import CalmixError
from calmix.publish import (MASKS_FILE, SERVING_NOTE, PruneCard, base_model_id, card_text, load_masks, push_to_hub,
                            save_masks)

_PRE = re.compile(r"^/api/models/([^/]+/[^/]+)/preupload/([^/?]+)")
_COMMIT = re.compile(r"^/api/models/([^/]+/[^/]+)/commit/([^/?]+)")


class HubStandIn:
    """Serve a minimal hub API; `.url` is its endpoint, `.repos`, `.files`, `.yaml`, `.unhandled` what it saw."""

    def __init__(self, token: str, lifetime: float = 120.0) -> None:
        self.token = token
        self.repos: list[dict] = []
        self.files: dict[str, dict[str, bytes]] = {}
        self.yaml: list[str] = []
        self.unhandled: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._watchdog = threading.Timer(lifetime, self.close)
        self._watchdog.daemon = True

    def __enter__(self) -> "HubStandIn":
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        self._watchdog.cancel()
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a handler thread

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def _reply(self, code: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self) -> None:
                body = self._body()
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                if self.path == "/api/repos/create":
                    data = json.loads(body)
                    repo = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                    hub.repos.append(data)
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if self.path == "/api/validate-yaml":
                    hub.yaml.append(json.loads(body)["content"])
                    return self._reply(200, {"errors": [], "warnings": []})
                if m := _PRE.match(self.path):
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                if m := _COMMIT.match(self.path):
                    store = hub.files.setdefault(m.group(1), {})
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            store[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] != "header":
                            hub.unhandled.append(f"commit item {item['key']}")
                    return self._reply(200, {"commitUrl": f"{hub.url}/{m.group(1)}/commit/{'0' * 40}",
                                             "commitOid": "0" * 40})
                hub.unhandled.append(f"POST {self.path}")
                return self._reply(404, {"error": f"no such endpoint {self.path}"})

            def do_GET(self) -> None:
                hub.unhandled.append(f"GET {self.path}")
                self._reply(404, {"error": f"no such endpoint {self.path}"})

        return Handler


TOKEN = "hf_standin_token"


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """The stand-in hub, with HF_ENDPOINT and HF_TOKEN pointed at it and no stored login read."""
    with HubStandIn(TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def test_masks_round_trip_bit_packed(tmp_path):
    gen = torch.Generator().manual_seed(0)
    masks = {"a.weight": torch.rand(64, 128, generator=gen) < 0.5, "b.weight": torch.rand(7, 13, generator=gen) < 0.3,
             "c.weight": torch.zeros(3, 5, dtype=torch.bool)}
    path = save_masks(tmp_path / MASKS_FILE, masks)
    back = load_masks(path)
    assert back.keys() == masks.keys()
    for name, m in masks.items():
        assert back[name].dtype == torch.bool and back[name].shape == m.shape and torch.equal(back[name], m)
    from safetensors.numpy import load_file

    raw = load_file(str(path))  # 8 mask entries per stored byte
    assert {k: v.size for k, v in raw.items()} == {"a.weight": 64 * 128 // 8, "b.weight": 12, "c.weight": 2}


def test_load_masks_refuses_another_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CalmixError, match="not a calmix masks file"):
        load_masks(tmp_path / "model.safetensors")


def test_base_model_of_builtins_hub_ids_and_hub_cache_folders(tmp_path, tiny_dir):
    assert base_model_id("default") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("gemma3-270m") == "google/gemma-3-270m"
    assert base_model_id("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"
    snap = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    assert base_model_id(str(snap)) == "org/name"
    assert base_model_id(str(tiny_dir)) is None


def _card(**over) -> PruneCard:
    facts = dict(model="default", method="wanda", sparsity=0.5, pattern="2:4", measured_sparsity=0.5, n_linears=210,
                 dtype="bfloat16", calib={"spec": "mix:c4=1,gsm8k=1", "nsamples": 128, "seqlen": 2048, "seed": 3,
                                          "card": {"window_counts": {"c4": 64, "gsm8k": 64}}},
                 command="calmix prune --model default --method wanda", calmix_version="9.9.9",
                 ppl={"dense": {"ppl": 18.25, "windows": 40, "seqlen": 2048, "data": "wikitext2"},
                      "pruned": {"ppl": 31.5, "windows": 40, "seqlen": 2048, "data": "wikitext2"}},
                 retention={"Math": 61.25, "Total": 70.5})
    facts.update(over)
    return PruneCard(**facts)


def test_card_metadata_and_body():
    text = card_text(_card())
    meta = _front_matter(text)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["library_name"] == "transformers"
    assert {"pruned", "wanda", "2:4-sparsity", "calmix"} <= set(meta["tags"])
    for needle in ("`mix:c4=1,gsm8k=1`", '"gsm8k": 64', "128 windows of 2048 tokens, seed 3", "| pattern | 2:4 |",
                   "| measured sparsity | 0.5000 over 210 decoder linears |", "| 40 windows × 2048 tokens of wikitext2 | "
                   "18.25 | 31.50 |", "| Math | 61.2 |", "| Total | 70.5 |", "calmix prune --model default --method wanda",
                   "calmix 9.9.9", "vLLM removed its 2:4 sparse kernels", "compressed-tensors 0.15",
                   "quantization", "bfloat16"):
        assert needle in text, needle
    assert SERVING_NOTE in text and "## Masks" not in text


def test_card_says_what_was_not_measured_and_omits_an_unknown_base(tiny_dir):
    text = card_text(_card(model=str(tiny_dir), ppl=None, retention=None, masks_file=MASKS_FILE))
    assert "base_model" not in _front_matter(text)
    assert "Perplexity: not measured" in text and "Retention: not measured" in text
    assert f"`{MASKS_FILE}` holds the pruning masks" in text


def test_prune_writes_card_masks_and_pushes_the_folder(tiny_dir, tmp_path, hub, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "pruned"
    argv = ["prune", "--model", str(tiny_dir), "--method", "wanda", "--sparsity", "0.5", "--calib", "stdlib",
            "--nsamples", "2", "--seqlen", "16", "--out", str(out), "--save-masks", "--push-to-hub", "me/tiny-wanda"]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    # the card
    text = (out / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "transformers" and {"pruned", "wanda", "calmix"} <= set(meta["tags"])
    assert "`stdlib`" in text and '"canonical": "stdlib"' in text and SERVING_NOTE in text
    # the command in the card parses back to the very options of this run
    command = re.search(r"```bash\n(.*)\n```", text).group(1)
    words = shlex.split(command)
    assert words[0] == "calmix"
    again, orig = vars(build_parser().parse_args(words[1:])), vars(build_parser().parse_args(argv))
    assert {k: v for k, v in again.items() if k != "func"} == {k: v for k, v in orig.items() if k != "func"}
    # the masks are the zeros of the saved pruned linears
    masks = load_masks(out / MASKS_FILE)
    weights = load_file(out / "model.safetensors")
    rec = json.loads((out / "calmix.json").read_text())
    assert sorted(masks) == sorted(f"{r['name']}.weight" for r in rec["layers"]) and len(masks) == 14
    for name, m in masks.items():
        assert torch.equal(m, weights[name] == 0) and float(m.float().mean()) == pytest.approx(0.5)
    # the upload: the repo was created and every file of the folder arrived byte for byte
    assert hub.unhandled == []
    assert [(r["organization"], r["name"], r.get("type")) for r in hub.repos] == [("me", "tiny-wanda", "model")]
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert hub.files["me/tiny-wanda"] == local
    assert hub.yaml == [text]
    assert f"pushed to {hub.url}/me/tiny-wanda/commit/" in captured.out


def test_push_without_a_token_or_to_an_unreachable_hub_says_so(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored login
    with pytest.raises(CalmixError, match="no Hugging Face token.*hf auth login"):
        push_to_hub(folder, "me/x")
    with HubStandIn(TOKEN) as server:  # a port that is free again once the stand-in has closed
        url = server.url
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with pytest.raises(CalmixError, match=r"pushing to me/x failed .*saved in") as err:
        push_to_hub(folder, "me/x", token=TOKEN)
    assert "\n" not in str(err.value)


def test_push_with_a_refused_token(tmp_path, hub):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(CalmixError, match="pushing to me/x failed"):
        push_to_hub(folder, "me/x", token="hf_wrong")
    assert hub.repos == [] and hub.files == {}


def test_bad_repo_id_fails_before_anything_runs(tiny_dir, tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["prune", "--model", str(tiny_dir), "--calib", "stdlib", "--out", str(out), "--push-to-hub", "no repo"])
    err = capsys.readouterr().err
    assert rc == 2 and "is not a hub repo id" in err and not out.exists()
