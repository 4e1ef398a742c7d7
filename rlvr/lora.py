"""LoRA RL: train low-rank adapters on a frozen base model instead of the whole model.

The adapter is injected into the Hugging Face model in place (``transformers``' peft integration), so the
policy stays the same class: the trainer's forward (:mod:`rlvr.policy`), gradient checkpointing and FSDP2
sharding (:mod:`rlvr.distributed`) see the model they always see, with ``lora_A``/``lora_B`` beside each
adapted linear layer's frozen ``base_layer``. What changes:

* only the adapter trains: the optimizer gets the trainable parameters only, and holds no state for the base;
* the reference policy of the KL penalty is the policy with its adapter switched off (:func:`adapter_disabled`),
  not a second copy of the model;
* checkpoints hold the adapter alone (``save_pretrained`` of a model with an adapter writes the peft format:
  ``adapter_config.json`` + ``adapter_model.safetensors``), plus, on request, a merged Hugging Face model
  (:func:`save_merged`) that ``from_pretrained`` and vLLM load as any model;
* after each step the sampler gets base + adapter (:class:`EngineSync`): merged into the engine's weights
  (``merge``, the default, any engine) or as a new vLLM LoRA adapter version (``adapter``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from rlvr.distributed import SINGLE, World, full_parameters, unwrapped
from rlvr.train_config import LoraConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MERGED_DIR = "merged"
ADAPTER_NAME = "default"  # peft's name of a model's only adapter
# vLLM's LoRA slots are sized by max_lora_rank, which must be one of these (vllm.config.lora.MaxLoRARanks)
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# parameter-name pieces of an adapted layer: its frozen base linear layer and the two low-rank factors
_BASE, _DOWN, _UP = ".base_layer.", f".lora_A.{ADAPTER_NAME}.", f".lora_B.{ADAPTER_NAME}."


def attach(model: nn.Module, cfg: LoraConfig, adapter_dir: Path | None = None) -> nn.Module:
    """Inject a LoRA adapter into ``model`` in place and freeze everything else; returns ``model``.

    The adapter starts as peft initialises it (``lora_B`` zero: base + adapter = base) or, with
    ``adapter_dir`` (a checkpoint being resumed), with the weights saved there."""
    try:
        import peft
    except ImportError as error:
        raise ImportError("model.lora needs peft: `pip install rlvr[lora]` (make setup installs it), or set "
                          "model.lora.rank=0 for full fine-tuning") from error

    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                             target_modules=_target_modules(cfg.target_modules))
    try:
        model.add_adapter(config, adapter_name=ADAPTER_NAME)
    except ValueError as error:  # peft names the modules it could not find
        raise ValueError(f"model.lora.target_modules={cfg.target_modules} matches no layer of {type(model).__name__} "
                         f"({error}); use all-linear or names of its linear layers, e.g. [q_proj, v_proj]") from error
    if adapter_dir is not None:
        load_adapter_weights(model, adapter_dir)
    return model


def _target_modules(names: list[str]) -> str | list[str]:
    return "all-linear" if names == ["all-linear"] else list(names)


def load_adapter_weights(model: nn.Module, adapter_dir: Path) -> None:
    """Load the adapter weights saved in ``adapter_dir`` into the model's (identically configured) adapter."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    if not (Path(adapter_dir) / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no LoRA adapter ({ADAPTER_WEIGHTS}): resume a LoRA run from its "
                                "own run directory, with the same model.lora settings")
    result = set_peft_model_state_dict(model, load_peft_weights(str(adapter_dir), device="cpu"), ADAPTER_NAME)
    expected = {name for name, _ in model.named_parameters() if _DOWN in name or _UP in name}
    if result.unexpected_keys or expected & set(result.missing_keys):
        raise ValueError(f"the adapter in {adapter_dir} does not fit this model's adapter (unexpected: "
                         f"{result.unexpected_keys[:3]}, missing: {sorted(expected & set(result.missing_keys))[:3]}); "
                         "resume with the model.lora settings the run was started with")


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What the optimizer updates: all parameters in full fine-tuning, the adapter's with LoRA."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


@contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[None]:
    """Inside, ``model`` computes as its base model: the frozen reference policy, with no second copy.

    peft's switch also clears the adapter's ``requires_grad`` and its switch back sets it again; the flags are
    put back exactly as they were instead, so what trains does not depend on peft's notion of it."""
    module = unwrapped(model)
    flags = [(parameter, parameter.requires_grad) for parameter in module.parameters()]
    module.disable_adapters()
    try:
        yield
    finally:
        module.enable_adapters()
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def merged_parameters(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Base + adapter as the base model's own ``(name, tensor)`` pairs: ``W + (alpha / r) B A`` for every adapted
    linear layer, every other parameter as it is. One layer at a time (FSDP shards are gathered as their turn
    comes, see :func:`rlvr.distributed.full_parameters`), so little beyond one merged layer is alive at once."""
    scaling = {name: layer.scaling[ADAPTER_NAME] for name, layer in _adapted_layers(unwrapped(model))}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in full_parameters(model):
        for piece in (_BASE, _DOWN, _UP):
            if piece in name:
                layer, _, leaf = name.partition(piece)
                break
        else:
            yield name, value
            continue
        if piece == _BASE and leaf != "weight":  # the bias is not adapted
            yield f"{layer}.{leaf}", value
            continue
        parts = pending.setdefault(layer, {})
        parts[piece] = value
        if len(parts) == 3:
            del pending[layer]
            base = parts[_BASE]
            delta = (parts[_UP].float() @ parts[_DOWN].float()) * scaling[layer]
            yield f"{layer}.weight", (base.float() + delta).to(base.dtype)
    if pending:
        raise RuntimeError(f"adapted layers without all of base weight, lora_A and lora_B: {sorted(pending)[:3]}")


def _adapted_layers(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    for name, layer in module.named_modules():
        if isinstance(layer, LoraLayer):
            if getattr(layer, "fan_in_fan_out", False) or layer.use_dora.get(ADAPTER_NAME, False):
                raise ValueError(f"{name}: only plain LoRA on linear layers (no Conv1D, no DoRA) is merged here")
            yield name, layer


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's full tensors under the model's parameter names (FSDP shards gathered: a collective)."""
    from torch.distributed.tensor import DTensor

    tensors = {}
    for name, parameter in unwrapped(model).named_parameters():
        if _DOWN in name or _UP in name:
            value = parameter.detach()
            tensors[name] = (value.full_tensor() if isinstance(value, DTensor) else value).cpu()
    return tensors


def save_merged(model: nn.Module, directory: Path, world: World = SINGLE) -> None:
    """A plain Hugging Face model of base + adapter (config, generation config, safetensors weights) that
    ``from_pretrained`` and vLLM load; every rank calls it (shards are gathered), rank 0 writes."""
    from safetensors.torch import save_file

    tensors = {name: value.detach().cpu().contiguous() for name, value in merged_parameters(model)}
    if not world.is_main:
        return
    module = unwrapped(model)
    directory.mkdir(parents=True, exist_ok=True)
    module.config.save_pretrained(directory)
    if module.can_generate():
        module.generation_config.save_pretrained(directory)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def is_adapter_dir(path: Path) -> bool:
    """A peft adapter directory (``adapter_config.json``, and no full model beside it)."""
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def servable_model(path: Path, cache_dir: str | Path | None = None) -> Path:
    """A model directory any engine loads, for ``path``: ``path`` itself when it is a model; for an adapter
    directory, its ``merged/`` model when it has one (the final checkpoint of a LoRA run), else its base model
    (``base_model_name_or_path``) with the adapter merged in, written once into ``cache_dir`` under a digest of
    the adapter and reused after that."""
    path = Path(path)
    if not is_adapter_dir(path):
        return path
    if (path / MERGED_DIR / "config.json").is_file():
        return path / MERGED_DIR
    base = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base or not Path(base).expanduser().is_dir():
        raise FileNotFoundError(f"the adapter in {path} names its base model {base!r}, which is not a local directory; "
                                f"edit base_model_name_or_path in {path / ADAPTER_CONFIG} to the base model's directory")
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        digest.update((path / name).read_bytes())
    target = Path(cache_dir or "~/.cache/rlvr/models").expanduser() / f"merged-lora-{digest.hexdigest()[:16]}"
    if not (target / "model.safetensors").is_file():
        print(f"merging the adapter {path} into its base {base} -> {target}", flush=True)
        _merge_adapter_dir(path, Path(base).expanduser(), target)
    return target


def _merge_adapter_dir(adapter_dir: Path, base: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    model.load_adapter(str(adapter_dir), adapter_name=ADAPTER_NAME)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent if target.parent.exists() else None))
    try:
        save_merged(model, staging)
        tokenizer_source = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base
        AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def engine_options(cfg: LoraConfig, engine: str) -> dict[str, object]:
    """Engine construction options a LoRA run adds: vLLM's LoRA slots for ``sync=adapter``."""
    if cfg.rank == 0 or cfg.sync == "merge":
        return {}
    if engine != "vllm":
        raise ValueError(f"model.lora.sync=adapter needs the vllm engine (vLLM's LoRA support); rollout.engine={engine} "
                         "takes the adapter merged into its weights: set model.lora.sync=merge")
    slots = next((rank for rank in VLLM_MAX_LORA_RANKS if rank >= cfg.rank), None)
    if slots is None:
        raise ValueError(f"model.lora.rank={cfg.rank} is above vLLM's largest LoRA rank {VLLM_MAX_LORA_RANKS[-1]}; "
                         "lower it or set model.lora.sync=merge")
    return {"enable_lora": True, "max_lora_rank": slots, "max_loras": 1}


class EngineSync:
    """Puts the policy's base + adapter into the rollout engine after each update.

    ``merge``: the merged weights go through the engine's ``update_weights`` (the path of full fine-tuning, so
    the sampler computes exactly what a full model with those weights computes; every engine). ``adapter``: the
    adapter is written to a scratch directory and loaded as a new vLLM LoRA version (``load_adapter``); only the
    adapter moves, and vLLM applies it on top of the untouched base weights."""

    def __init__(self, engine, cfg: LoraConfig) -> None:
        self.engine = engine
        self._scratch = Path(tempfile.mkdtemp(prefix="rlvr-adapter-")) if cfg.sync == "adapter" else None

    def __call__(self, policy: nn.Module, version: int) -> None:
        if self._scratch is None:
            self.engine.update_weights(merged_parameters(policy))
            return
        directory = self._scratch / f"v{version}"
        tensors = adapter_tensors(policy)  # every rank runs its own engine, so every rank writes its own copy
        unwrapped(policy).save_pretrained(directory, state_dict=tensors)
        self.engine.load_adapter(str(directory), version)
        for old in self._scratch.iterdir():  # vLLM has read the new version: the older ones are not needed
            if old != directory:
                shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
