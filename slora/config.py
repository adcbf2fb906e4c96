"""Typed configuration of one continual run.

Every choice that SD-LoRA's paper and its official code make differently is a field here
(docs/method.md §12). Defaults follow the official code, because its numbers are the ones
users compare against; ``semantics="paper"`` flips every such switch to the paper's reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Normaliser = Literal["factor_norms", "product_norm"]
Semantics = Literal["official", "paper"]


@dataclass
class AdapterConfig:
    """The S-LoRA adapter: where it goes and how directions and magnitudes behave."""

    rank: int = 10  # rank of each new direction (RR lowers it by rank_schedule)
    targets: tuple[str, ...] = ("q", "v")  # parts of the fused attn.qkv that get a LoRA direction
    blocks: tuple[int, ...] = ()  # empty: every transformer block
    # official: ||U||_F * ||V||_F (code); paper: ||U V||_F (Eq. 3)
    normaliser: Normaliser = "factor_norms"
    # official: the current direction trains raw (alpha_t * U_t V_t); paper: normalised while it trains
    normalise_current: bool = False
    magnitude_init: float = 0.8  # official 0.8; paper 1.0
    # official: every magnitude restarts at magnitude_init each task; paper: carried over, function-preserving
    carry_magnitudes: bool = False
    # RR: (from_task, rank) pairs, 0-indexed tasks; before the first pair the rank is `rank`.
    # Official (commented-out code): tasks 0-3 -> 10, 4-7 -> 8, >=8 -> 6. A rank above `rank` is capped to it.
    rank_schedule: tuple[tuple[int, int], ...] = ((4, 8), (8, 6))
    # KD: absorb a new direction when the joint least-squares residual is at most this (a norm, docs/method.md §7)
    kd_threshold: float = 9e-4


@dataclass
class OptimConfig:
    """Optimiser of one stage. The official code uses SGD(momentum 0.9), no weight decay, MultiStepLR per epoch."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr_direction: float = 1e-2  # the current task's LoRA factors
    lr_magnitude: float = 1e-2  # the magnitude vector (a separate parameter group, so it can be tuned apart)
    lr_head: float = 1e-2  # the new classifier rows
    momentum: float = 0.9
    epochs: int = 20
    first_task_epochs: int = 0  # 0: same as epochs (the official init_epoch)
    first_task_lr_scale: float = 1.0  # task 0 trains at lr_* x this (the official init_lr / lrate ratio)
    milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    batch_size: int = 128
    grad_clip: float = 0.0  # 0: off


@dataclass
class BackboneConfig:
    """A timm VisionTransformer. ``name`` is the exact timm name with its pretrained tag."""

    name: str = "vit_tiny_patch16_224"
    pretrained: bool = False  # load the tag's weights (hub, or timm's cache); see `checkpoint` for offline use
    checkpoint: str = ""  # a safetensors file or a timm folder (config.json + model.safetensors)
    # Size overrides of the timm architecture; 0 keeps the architecture's own. The defaults make the tiny
    # random-init ViT sized for the embedded 8x8 digits; `backbone=NAME` on the command line resets them to 0.
    embed_dim: int = 48
    depth: int = 3
    num_heads: int = 3
    patch_size: int = 4


@dataclass
class DataConfig:
    benchmark: str = "digits"
    data_root: str = ""  # folder of a benchmark's local files ('' for the embedded digits)
    num_tasks: int = 0  # 0: the benchmark's default
    classes_per_task: int = 0  # 0: from num_tasks
    class_order_seed: int = -1  # -1: the benchmark's default seed
    image_size: int = 0  # 0: the benchmark's default
    input_scaling: Literal["unit", "backbone"] = "unit"  # unit: pixels in [0,1], no mean/std (published numbers)
    # auto: the benchmark's own (crop_flip for the paper's benchmarks and imagefolder, none for digits/omniglot)
    augment: Literal["auto", "none", "crop_flip"] = "auto"
    max_train_per_class: int = 0  # 0: all; a cap for quick runs and tests
    max_test_per_class: int = 0
    # Share of each class's training images held out as a validation split for model selection (seeded by the
    # class, so every run and trial holds out the same images; carved before max_train_per_class). 0: off, as in
    # pipelines/run.py; sweeps default to SWEEP_VAL_FRACTION and refuse 0, since they must never select on test data.
    val_fraction: float = 0.0
    # '' : all; else a file of class folder names (one per line) or a comma list; benchmarks whose loader supports it
    classes: str = ""
    cache_dir: str = ""  # decoded-data cache ('' : $SLORA_CACHE_DIR, else ~/.cache/slora-sweep)


SWEEP_VAL_FRACTION = 0.1
# What every stage scores, on each split: `val_<score>` (when a validation split exists) and `test_<score>`.
SCORES = ("accuracy", "accuracy_old", "accuracy_new", "forgetting", "average_incremental_accuracy")
SPLITS = ("val", "test")
SPLIT_SCORES = tuple(f"{split}_{score}" for split in SPLITS for score in SCORES)


@dataclass
class RunConfig:
    """One continual sequence: variant, data, backbone, adapter, optimiser, and where results go."""

    variant: str = "slora"
    semantics: Semantics = "official"
    seed: int = 0
    device: str = "auto"  # auto: cuda when present, else cpu
    out_dir: str = ""  # '' : runs/<variant>-<benchmark>-<timestamp>
    save_merged: Literal["every", "last", "none"] = "every"
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


# What semantics=paper changes (docs/method.md §12); anything the user sets explicitly wins over the preset.
PAPER_PRESET: dict[str, object] = {
    "adapter.normaliser": "product_norm",
    "adapter.normalise_current": True,
    "adapter.magnitude_init": 1.0,
    "adapter.carry_magnitudes": True,
    # Algorithm 1 reduces the rank at 1-indexed tasks mu=4 and nu=8, i.e. 0-indexed tasks 3 and 7.
    "adapter.rank_schedule": ((3, 8), (7, 6)),
    "optim.optimizer": "adam",
    "optim.lr_direction": 8e-3,
    "optim.lr_magnitude": 8e-3,
    "optim.lr_head": 8e-3,
}


# Per-benchmark training defaults, applied before semantics=paper and the user's overrides. The paper's
# benchmarks take the official configs (docs/method.md §5). The embedded digits and the omniglot development
# benchmark use small ViTs for which SGD at those rates barely moves in a few epochs: Adam there (measured:
# a random-init tiny ViT with rank-10 adapters reached 94% joint digits accuracy with Adam 3e-3, 20% with SGD 1e-2).
def _official(lr: float, epochs: int, milestones: tuple[int, ...] = (), lr_decay: float = 0.1) -> dict[str, object]:
    """An official SD-LoRA config: SGD(momentum 0.9) at one lr for every group, batch 128, MultiStepLR per epoch,
    on the ViT-B/16 the paper names (timm's exact tag; pretrained=True, or backbone.checkpoint= offline)."""
    return {
        "optim.optimizer": "sgd", "optim.lr_direction": lr, "optim.lr_magnitude": lr, "optim.lr_head": lr,
        "optim.epochs": epochs, "optim.milestones": milestones, "optim.lr_decay": lr_decay, "optim.batch_size": 128,
        "backbone.name": "vit_base_patch16_224.augreg2_in21k_ft_in1k", "backbone.pretrained": True,
        "backbone.embed_dim": 0, "backbone.depth": 0, "backbone.num_heads": 0, "backbone.patch_size": 0,
    }


def _adam(lr: float, batch_size: int, epochs: int) -> dict[str, object]:
    return {"optim.optimizer": "adam", "optim.lr_direction": lr, "optim.lr_magnitude": lr, "optim.lr_head": lr,
            "optim.batch_size": batch_size, "optim.epochs": epochs}


# Every benchmark a config may name. slora.data.catalog maps each to its loader (a test keeps the two equal); the
# names live here so that validating a config, as every Ray trial driver does, imports neither torch nor a loader.
BENCHMARK_NAMES = ("digits", "imagefolder", "omniglot", "omniglot_background", "cifar100", "imagenet_r_5",
                   "imagenet_r_10", "imagenet_r_20", "imagenet_a", "domainnet", "cub", "tinyimagenet")


def check_benchmark_name(name: str) -> None:
    if name not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {name!r}; valid benchmarks: {', '.join(BENCHMARK_NAMES)}")


BENCHMARK_PRESETS: dict[str, dict[str, object]] = {
    "digits": _adam(3e-3, batch_size=32, epochs=8),
    # A small ViT pre-trained on omniglot_background (pipelines/pretrain.py, backbone.checkpoint=FOLDER).
    "omniglot": _adam(3e-3, batch_size=32, epochs=20),  # 150 images a task: 5 epochs were 15 steps, too few
    "omniglot_background": _adam(3e-3, batch_size=64, epochs=5),
    # docs/method.md §5: the official json configs. sdlora_inr.json: 1e-2, milestone 10000 (constant), 20 epochs.
    "imagenet_r_5": _official(1e-2, 20),
    "imagenet_r_10": _official(1e-2, 20),
    "imagenet_r_20": _official(1e-2, 20),
    # sdlora_ina.json: init_lr 1e-2 on task 0, lrate 5e-3 on later tasks.
    "imagenet_a": {**_official(5e-3, 20, milestones=(10, 15), lr_decay=0.05), "optim.first_task_lr_scale": 2.0},
    "cifar100": _official(8e-3, 20),  # sdlora_c100.json: milestones never reached, i.e. constant
    "domainnet": _official(2e-2, 10, milestones=(4, 6, 8), lr_decay=0.005),  # sdlora_dom.json
    "cub": _official(1e-2, 20),  # no official json for CUB: ImageNet-R's settings
    # Not a paper benchmark: a CPU-sized protocol on the shared ViT-Ti, 112 px with its position embeddings
    # resampled from 224 (image_size=224 on a GPU), pixels in [0,1] as the official code feeds them.
    "tinyimagenet": {
        "backbone.name": "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "backbone.pretrained": True,
        "backbone.embed_dim": 0, "backbone.depth": 0, "backbone.num_heads": 0, "backbone.patch_size": 0,
        "optim.optimizer": "sgd", "optim.lr_direction": 1e-2, "optim.lr_magnitude": 1e-2, "optim.lr_head": 1e-2,
        "optim.batch_size": 32, "optim.epochs": 3,
    },
}
