"""Building the frozen timm ViT: exact tagged names, hub weights when reachable, a local file when not."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from .config import BackboneConfig


class BackboneError(ValueError):
    pass


def model_args(cfg: BackboneConfig, image_size: int, in_chans: int) -> dict:
    """The timm kwargs that size the architecture: only what differs from the architecture's own."""
    args = {"img_size": image_size, "in_chans": in_chans}
    for key in ("embed_dim", "depth", "num_heads", "patch_size"):
        if getattr(cfg, key):
            args[key] = getattr(cfg, key)
    return args


def _local_folder(path: Path) -> tuple[str, dict, Path]:
    """A timm folder (config.json + model.safetensors, as save_for_hf writes it): architecture, args, weights."""
    config = json.loads((path / "config.json").read_text())
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise BackboneError(f"backbone.checkpoint={path}: no model.safetensors in the folder")
    return config["architecture"], config.get("model_args", {}), weights


def create_backbone(cfg: BackboneConfig, image_size: int, in_chans: int, seed: int = 0) -> nn.Module:
    """A timm VisionTransformer with num_classes=0 (features out), frozen by the caller.

    Order: ``checkpoint`` (a safetensors file or a timm folder) when given; else the tagged hub weights when
    ``pretrained``; else a random init drawn from ``seed`` (so every process of a run builds the same model).
    """
    if cfg.checkpoint:
        return _from_checkpoint(cfg, image_size, in_chans)
    args = model_args(cfg, image_size, in_chans)
    if cfg.pretrained:
        source = _offline_source(cfg.name)
        try:
            return timm.create_model(cfg.name, pretrained=True, num_classes=0, **source, **args)
        except Exception as err:  # the hub's errors vary by cause: offline, unknown tag, gated repository
            raise BackboneError(
                f"backbone.name={cfg.name}: pretrained weights could not be loaded ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}). Either make the hub reachable (or timm's cache hold the "
                f"weights), or set backbone.checkpoint=PATH to a safetensors file or a timm local-dir folder."
            ) from err
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return timm.create_model(cfg.name, pretrained=False, num_classes=0, **args)
        except RuntimeError as err:
            raise BackboneError(f"backbone.name={cfg.name}: {err}") from err


def _offline_source(name: str) -> dict:
    """timm kwargs that read the tag's weights straight from the hub cache when the hub cannot be reached.

    Without this an offline machine waits about a minute through the hub client's retries before failing, or
    before falling back to a cached file it had all along. Empty when the hub answers (timm then downloads or
    revalidates as usual), when a proxy decides reachability, or when the tag is not a hub one.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    pretrained = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    repo = getattr(pretrained, "hf_hub_id", None)
    if constants.HF_HUB_OFFLINE or not repo or _hub_reachable(constants.ENDPOINT):
        return {}
    cached = try_to_load_from_cache(repo, "model.safetensors")
    if isinstance(cached, str):
        return {"pretrained_cfg_overlay": {"file": cached}}
    raise BackboneError(
        f"backbone.name={name}: the hub ({constants.ENDPOINT}) cannot be reached and its cache "
        f"({constants.HF_HUB_CACHE}) has no {repo}/model.safetensors. Either make the hub reachable, or set "
        f"backbone.checkpoint=PATH to a safetensors file or a timm local-dir folder."
    )


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    if any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows; let the hub client try
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _from_checkpoint(cfg: BackboneConfig, image_size: int, in_chans: int) -> nn.Module:
    if cfg.checkpoint.startswith("hf-hub:"):
        try:  # any timm ViT on the Hugging Face hub (or in its local cache)
            return timm.create_model(cfg.checkpoint, pretrained=True, num_classes=0, img_size=image_size)
        except Exception as err:
            raise BackboneError(
                f"backbone.checkpoint={cfg.checkpoint}: could not be loaded ({type(err).__name__}); without a "
                f"reachable hub, give a safetensors file or a timm local-dir folder instead"
            ) from err
    path = Path(cfg.checkpoint.removeprefix("local-dir:")).expanduser()
    if not path.exists():
        raise BackboneError(
            f"backbone.checkpoint={cfg.checkpoint}: no such file or folder; give a safetensors file or a timm "
            f"folder (config.json + model.safetensors, e.g. from pipelines/pretrain.py)"
        )
    if path.is_dir():
        name, args, weights = _local_folder(path)
        # timm records num_classes among the model args; the head is ours, so the backbone is built without one
        args = {k: v for k, v in args.items() if k != "num_classes"}
        if args.get("in_chans", in_chans) != in_chans:
            raise BackboneError(f"backbone.checkpoint={cfg.checkpoint} takes {args['in_chans']}-channel images, "
                                f"but the benchmark's have {in_chans} channels")
        args = {**args, "img_size": image_size, "in_chans": in_chans}
    else:
        name, args, weights = cfg.name, model_args(cfg, image_size, in_chans), path
    vit = timm.create_model(name, pretrained=False, num_classes=0, **args)
    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("head.")}
    if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
        # A checkpoint trained at another image size: interpolate its position embeddings, as timm does.
        from timm.layers import resample_abs_pos_embed

        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_size=list(vit.patch_embed.grid_size),
            num_prefix_tokens=0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens,
        )
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BackboneError(
            f"backbone.checkpoint={cfg.checkpoint} does not fit {name} {args}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return vit
