"""A calibration set: `nsamples x seqlen` token ids plus a provenance card, saved as .pt + .json or as bytes."""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from calmix.errors import CalmixError
from calmix.runrecord import write_json_atomic


@dataclass
class CalibSet:
    """Token windows for calibration: input_ids [n, L] (long), optional attention_mask, provenance card."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    card: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2:
            raise CalmixError(f"a calibration set must be 2-D [nsamples, seqlen], got shape {tuple(self.input_ids.shape)}")
        if self.input_ids.shape[0] == 0 or self.input_ids.shape[1] == 0:
            raise CalmixError("the calibration set is empty: give a source with text, or more nsamples/seqlen")
        self.input_ids = self.input_ids.long()
        if self.attention_mask is not None and self.attention_mask.shape != self.input_ids.shape:
            raise CalmixError("attention_mask must have the same shape as input_ids")

    @property
    def nsamples(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seqlen(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def ntokens(self) -> int:
        """Number of real (non-padding) tokens."""
        if self.attention_mask is None:
            return self.input_ids.numel()
        return int(self.attention_mask.sum())

    def save(self, path: str | os.PathLike) -> Path:
        """Write `path` (.pt with tensors and card) and `path.json` (the card), each atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.save(self._payload(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        write_json_atomic(path.with_suffix(path.suffix + ".json"), self.card)
        return path

    def to_bytes(self) -> bytes:
        """The set serialised like `save` writes it (ids, mask, card), e.g. for a database blob."""
        buf = io.BytesIO()
        torch.save(self._payload(), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "CalibSet":
        """Inverse of `to_bytes`."""
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls._from_saved(obj, {}, "the serialised calibration set")

    def _payload(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "card": self.card}

    @classmethod
    def _from_saved(cls, obj, card: dict, where: str) -> "CalibSet":
        """A set from what `save`/`to_bytes` wrote (a dict) or from plain id rows; `card` when none is saved."""
        mask = None
        if isinstance(obj, dict):
            if "input_ids" not in obj:
                raise CalmixError(f"{where} has no 'input_ids': save token rows as a tensor, a list, or {{'input_ids': ...}}")
            card = dict(obj.get("card") or card)
            mask = obj.get("attention_mask")
            obj = obj["input_ids"]
        try:
            ids = obj if isinstance(obj, torch.Tensor) else torch.tensor(obj, dtype=torch.long)
        except (ValueError, TypeError):
            raise CalmixError(f"{where} must hold equal-length rows of integer token ids") from None
        if mask is not None and not isinstance(mask, torch.Tensor):
            mask = torch.tensor(mask, dtype=torch.long)
        return cls(ids, mask, card)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibSet":
        """Read a set saved by `save`, a plain .pt tensor/list of id rows, or a .json list of id rows."""
        path = Path(path)
        if not path.is_file():
            raise CalmixError(f"calibration set file {path} does not exist")
        try:
            if path.suffix == ".json":
                obj = json.loads(path.read_text())
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any parse failure is a user-facing error here
            raise CalmixError(f"cannot read calibration set {path}: {str(err).splitlines()[0][:160]}") from None
        return cls._from_saved(obj, {"source": "file", "path": str(path)}, str(path))
