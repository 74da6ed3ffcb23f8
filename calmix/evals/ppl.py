"""Perplexity, SparseGPT-style: non-overlapping seqlen windows of one joined text."""

from __future__ import annotations

from pathlib import Path

from calmix.data.reserved import WIKITEXT2_HUB, eval_file, eval_path
from calmix.errors import CalmixError
from calmix.lm import bos_prefix
from calmix.lm import stream_perplexity as perplexity  # the name callers import


def wikitext2_text() -> str:
    """The WikiText-2 raw test split: the data root here, the HF hub for users."""
    path = eval_path("wikitext2", "test")
    if path is not None and path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        import datasets
    except ImportError:
        raise CalmixError(f"WikiText-2 not found locally (looked for ../shared/data/{eval_file('wikitext2', 'test')}) "
                          "and `datasets` is not installed: pip install datasets, or pass --data FILE") from None
    try:
        ds = datasets.load_dataset(*WIKITEXT2_HUB, split="test")
    except Exception as err:  # noqa: BLE001 - any hub failure is reported the same way
        raise CalmixError(f"cannot load WikiText-2 from the hub ({str(err).splitlines()[0][:120]}): "
                          "pass --data FILE with a local text file") from None
    return "\n\n".join(ds["text"])


def text_of(data: str) -> tuple[str, str]:
    """(text, label) for --data: 'wikitext2' or a .txt / .raw / .jsonl file."""
    if data == "wikitext2":
        return wikitext2_text(), "wikitext2-test"
    path = Path(data).expanduser()
    if not path.is_file():
        raise CalmixError(f"perplexity data '{data}' not found: pass wikitext2 or an existing text file")
    if path.suffix == ".jsonl":
        import json

        texts = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise CalmixError(f"{path}:{i} is not valid JSON") from None
                texts.append(rec.get("text", "") if isinstance(rec, dict) else str(rec))
        return "\n\n".join(texts), str(path)
    return path.read_text(encoding="utf-8"), str(path)


def dataset_perplexity(model, tokenizer, data: str = "wikitext2", seqlen: int = 2048, device=None,
                       max_windows: int | None = None, progress: bool = True, bos: bool = True) -> dict:
    """Perplexity of model on a named dataset or file, joined as in SparseGPT ('\\n\\n' between records); each
    window starts with BOS where the tokenizer adds one (bos=False: the plain SparseGPT windows)."""
    text, label = text_of(data)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    out = perplexity(model, ids, seqlen, device=device, max_windows=max_windows, progress=progress,
                     bos=bos_prefix(tokenizer) if bos else [])
    out["data"] = label
    return out
