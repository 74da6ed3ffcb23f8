"""Batch sizes from free memory: bytes per row of a forward or a generation (KV cache, activations, logits),
the free memory of a device, and a halve-and-retry on out-of-memory.

Every size is capped by the caller's batch size, so where memory is ample (CPU, small models) nothing changes."""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

import torch

from calmix.errors import CalmixError

log = logging.getLogger(__name__)

T = TypeVar("T")

# share of the free memory a batch may take (the rest: allocator fragmentation, temporaries we do not count)
FREE_SHARE = 0.8
LOGIT_BYTES = 4  # logits are upcast to float32 before softmax / log_softmax


def text_config(config: Any) -> Any:
    """The decoder's config (multimodal configs nest it as text_config)."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def head_dim(config: Any) -> int:
    """Width of one attention head: config.head_dim where set, else hidden_size / num_attention_heads."""
    cfg = text_config(config)
    explicit = getattr(cfg, "head_dim", None)
    return int(explicit) if explicit else int(cfg.hidden_size) // int(cfg.num_attention_heads)


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Bytes the KV cache holds per token of one row: keys and values of every layer's KV heads."""
    cfg = text_config(config)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    return 2 * int(cfg.num_hidden_layers) * int(kv_heads) * head_dim(cfg) * dtype.itemsize


def activation_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Bytes of one layer's live activations per token: the residual stream, its norm, the attention output and
    the MLP's gate, up and product (layers run one after the other, so one layer's worth is live at a time)."""
    cfg = text_config(config)
    hidden = int(cfg.hidden_size)
    inter = int(getattr(cfg, "intermediate_size", None) or 4 * hidden)
    return (4 * hidden + 3 * inter) * dtype.itemsize


def row_bytes(config: Any, dtype: torch.dtype, seqlen: int, cache: bool = False, logit_positions: int | None = None,
              attention_scores: bool = False) -> int:
    """Bytes one row of a batch needs: activations of `seqlen` tokens, the KV cache if `cache`, float32 logits
    at `logit_positions` (default every position), and the heads x seqlen² scores of eager attention if asked."""
    cfg = text_config(config)
    positions = seqlen if logit_positions is None else logit_positions
    need = seqlen * activation_bytes_per_token(cfg, dtype) + positions * int(cfg.vocab_size) * LOGIT_BYTES
    if cache:
        need += seqlen * kv_bytes_per_token(cfg, dtype)
    if attention_scores:
        need += int(cfg.num_attention_heads) * seqlen * seqlen * LOGIT_BYTES
    return need


def free_memory(device: str | torch.device) -> int | None:
    """Bytes free for new tensors on `device`: CUDA's mem_get_info, the CPU's available memory; None if unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    return None


def fit_batch(cap: int, per_row: int, free: int | None, share: float = FREE_SHARE) -> int:
    """The largest batch of at most `cap` rows whose `per_row` bytes fit in `share` of `free` bytes (at least 1)."""
    if cap < 1:
        raise CalmixError(f"batch size must be >= 1, got {cap}")
    if free is None or per_row <= 0:
        return cap
    return max(1, min(cap, int(free * share) // per_row))


def memory_batch(model: Any, cap: int, seqlen: int, device: str | torch.device, **row: Any) -> int:
    """A batch size for `model` on `device`: `cap` unless fewer rows of `seqlen` tokens fit its free memory
    (`row`: the keyword arguments of row_bytes)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(text_config(config), "hidden_size"):
        return cap
    dtype = next(model.parameters()).dtype
    size = fit_batch(cap, row_bytes(config, dtype, seqlen, **row), free_memory(device))
    if size < cap:
        log.info("batches of %d rows (not %d) fit the free memory of %s at %d tokens", size, cap, device, seqlen)
    return size


def is_out_of_memory(err: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA, MPS, XPU, and CPU allocations that raise it)."""
    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError) and "out of memory" in str(err))


def _release_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def halving(run: Callable[[int], T], batch: int, what: str) -> T:
    """run(batch); on out-of-memory run it again with half the batch (down to 1), saying so once.

    `run` must start over from scratch for a batch size, so that a result equals a run at that batch size."""
    warned = False
    while True:
        try:
            return run(batch)
        except Exception as err:  # noqa: BLE001 - only out-of-memory is retried, everything else re-raised
            if not is_out_of_memory(err):
                raise
            del err
            _release_cache()
            if batch <= 1:
                raise CalmixError(f"{what}: out of memory even one row at a time: use a shorter sequence, a smaller "
                                  f"dtype or a device with more memory") from None
            if not warned:
                log.warning("%s: out of memory at batches of %d rows: retrying with smaller batches", what, batch)
                warned = True
            batch //= 2


def batched(run: Callable[[int], T], model: Any, cap: int, seqlen: int, device: str | torch.device, what: str,
            **row: Any) -> T:
    """run(batch) at the memory_batch size (at most `cap`), halved and rerun on out-of-memory."""
    return halving(run, memory_batch(model, cap, seqlen, device, **row), what)
