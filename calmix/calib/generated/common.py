"""What every generator shares: the generator registry, seeds, packing with EOS, stop words, card helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from calmix.calib.calibset import CalibSet
from calmix.errors import CalmixError
from calmix.registry import Registry

# kind -> fn(model, tokenizer, nsamples, seqlen, seed=, device=, params=, **kw) -> CalibSet; the methods register
# themselves (the kind string names the error "unknown self-generated set ...").
GENERATORS: Registry[Callable[..., CalibSet]] = Registry("self-generated set")

# Common English stop words for Self-Cal's optional first-token restriction (kept if they are one token).
STOPWORDS = ("the", "a", "an", "in", "on", "at", "of", "to", "for", "with", "and", "but", "or", "as", "by", "from",
             "this", "that", "these", "those", "it", "he", "she", "they", "we", "you", "i", "there", "here", "when",
             "while", "if", "after", "before", "my", "his", "her", "their", "our", "one", "some", "many", "most",
             "all", "what", "how", "why", "who", "is", "it's", "once", "today", "in")

def generated_version(kind: str) -> str:
    """The cache version of a generator's sets: "model" (they depend on the model), with the generator's own
    `version` attribute appended once its algorithm changed (sets built by older code are not reused)."""
    version = getattr(GENERATORS.get(kind), "version", 1)
    return "model" if version == 1 else f"model/v{version}"


def subseed(seed: int, i: int) -> int:
    """A derived seed for step i of a seeded procedure (fits torch's 64-bit seeds)."""
    return (int(seed) * 1_000_003 + i) % 2**63


def model_name(model) -> str:
    """A short name of the model for provenance cards."""
    return str(getattr(model, "calmix_spec", None) or getattr(getattr(model, "config", None), "_name_or_path", "")
               or type(model).__name__)


def join_eos(seqs: Sequence[Sequence[int]], eos: int) -> list[int]:
    """Concatenate token sequences, each followed by EOS (empty sequences are skipped)."""
    out: list[int] = []
    for s in seqs:
        if len(s):
            out.extend(s)
            out.append(eos)
    return out


def decode(tokenizer, ids: Sequence[int]) -> str:
    """Text of token ids with special tokens kept (cards show exactly what was generated)."""
    return tokenizer.decode(list(ids), skip_special_tokens=False)


def stopword_token_ids(tokenizer, words: Sequence[str] = STOPWORDS) -> list[int]:
    """Ids of the stop words (lower-case and capitalised, no leading space) that the tokenizer encodes as one token."""
    out: list[int] = []
    for w in words:
        for form in (w, w.capitalize()):
            ids = tokenizer.encode(form, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in out:
                out.append(ids[0])
    if not out:
        raise CalmixError("no English stop word is a single token in this tokenizer: use stopword_first=0")
    return out


def no_tokens_error(kind: str) -> CalmixError:
    """The error of a generation in which the model ended every sequence at once."""
    return CalmixError(f"{kind}: generation returned no tokens (the model ended every sequence at once): "
                       f"check the model and its EOS token, or raise the temperature")


def seconds_card(ntokens: int, secs: float) -> dict:
    """Timing fields of a card: wall seconds and generated tokens per second."""
    return {"seconds": round(secs, 3), "tokens_per_s": round(ntokens / secs, 2) if secs > 0 else None}
