"""Typed configuration of one continual run.

Every choice that SD-LoRA's paper and its official code make differently is a field here
(docs/method.md §12). Defaults follow the official code, because its numbers are the ones
users compare against; ``semantics="paper"`` flips every such switch to the paper's reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).parent / "conf"  # the config groups: benchmark/, variant/, semantics/


def group_options(group: str) -> list[str]:
    """The names a config group offers: its YAML files (the one list of benchmarks, methods, semantics)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def choice(*options: str, methods: tuple[str, ...] = ()) -> Any:
    """A string field limited to ``options``, the first being the default. OmegaConf types no ``Literal``, so the
    choices live in the field's metadata: slora.checks enforces them and ``--help`` lists them. ``methods``: as
    ``owned``."""
    return field(default=options[0], metadata={"choices": options, "methods": methods})


def owned(default: Any, *methods: str, resolved: bool = False) -> Any:
    """A key only ``methods`` read: giving it to another method is an error naming them (slora.configure). A list
    default is copied per instance; ``resolved``: as ``resolved()``."""
    if isinstance(default, list):
        return field(default_factory=lambda: [list(v) if isinstance(v, list) else v for v in default],
                     metadata={"methods": methods, "resolved": resolved})
    return field(default=default, metadata={"methods": methods, "resolved": resolved})


# The methods that read each method-specific key (``owned``); tests/test_config.py checks these lists against the
# registry (slora.learners.LEARNERS) and against each S-LoRA variant's flags (slora/learners/slora/variants.py).
SLORA_FAMILY = ("seq_lora", "slora", "slora_rr", "slora_kd", "slora_pp", "joint")  # one LoRA adapter on attn.qkv
MAGNITUDES = ("slora", "slora_rr", "slora_kd", "slora_pp", "joint")  # normalised directions scaled by magnitudes
CARRIED = ("slora", "slora_rr", "slora_kd", "slora_pp")  # more than one task: magnitudes to carry over
RANK_REDUCTION = ("slora_rr", "slora_pp")
ABSORPTION = ("slora_kd", "slora_pp")
PROMPTS = ("coda_prompt", "l2p", "dualprompt")
LOW_RANK = (*SLORA_FAMILY, "inflora")
TRAINED = (*LOW_RANK, *PROMPTS, "seq_ft")  # every method but SimpleCIL, whose classifier is class means


def resolved(default: Any) -> Any:
    """A value that means "the benchmark's own" (0) or "what this machine has" ("auto"): the run resolves it, and a
    sweep's trial logs what it became (``slora.configure.resolved_defaults``)."""
    return field(default=default, metadata={"resolved": True})


@dataclass
class AdapterConfig:
    """The S-LoRA adapter: where it goes and how directions and magnitudes behave."""

    rank: int = owned(10, *LOW_RANK)  # rank of each new direction (RR lowers it by rank_schedule)
    targets: list[str] = owned(["q", "v"], *SLORA_FAMILY)  # parts of the fused attn.qkv that get a LoRA direction
    blocks: list[int] = owned([], *SLORA_FAMILY)  # empty: every transformer block
    # official: ||U||_F * ||V||_F (code); paper: ||U V||_F (Eq. 3)
    normaliser: str = choice("factor_norms", "product_norm", methods=MAGNITUDES)
    # official: the current direction trains raw (alpha_t * U_t V_t); paper: normalised while it trains
    normalise_current: bool = owned(False, *MAGNITUDES)
    magnitude_init: float = owned(0.8, *MAGNITUDES)  # official 0.8; paper 1.0
    # official: every magnitude restarts at magnitude_init each task; paper: carried over, function-preserving
    carry_magnitudes: bool = owned(False, *CARRIED)
    # RR: (from_task, rank) pairs, 0-indexed tasks; before the first pair the rank is `rank`.
    # Official (commented-out code): tasks 0-3 -> 10, 4-7 -> 8, >=8 -> 6. A rank above `rank` is capped to it.
    rank_schedule: list[list[int]] = owned([[4, 8], [8, 6]], *RANK_REDUCTION)
    # KD: absorb a new direction when the joint least-squares residual is at most this (a norm, docs/method.md §7)
    kd_threshold: float = owned(9e-4, *ABSORPTION)
    # How the directions enter the forward pass (the same function, different cost): "merged" folds them into the
    # qkv weight (one GEMM, but the backward pays the fused weight's full gradient); "factored" adds x V^T diag(s)
    # U^T beside the frozen GEMM (cost grows with the total rank); "auto" picks the cheaper by a FLOP count per step
    # (slora/learners/slora/compute.py ``cheaper_compute``).
    compute: str = choice("auto", "merged", "factored", methods=SLORA_FAMILY)


@dataclass
class OptimConfig:
    """Optimiser of one stage. The official code uses SGD(momentum 0.9), no weight decay, MultiStepLR per epoch."""

    optimizer: str = choice("sgd", "adam", methods=TRAINED)
    lr_direction: float = owned(1e-2, *LOW_RANK, *PROMPTS)  # the current task's LoRA factors (or prompts)
    lr_magnitude: float = owned(1e-2, *MAGNITUDES)  # the magnitude vector (its own parameter group)
    lr_head: float = owned(1e-2, *TRAINED)  # the new classifier rows
    lr_backbone: float = owned(1e-3, "seq_ft")  # every ViT weight, for the methods that fine-tune it
    momentum: float = owned(0.9, *TRAINED)
    epochs: int = owned(20, *TRAINED)
    first_task_epochs: int = owned(0, *TRAINED, resolved=True)  # 0: same as epochs (the official init_epoch)
    first_task_lr_scale: float = owned(1.0, *TRAINED)  # task 0 trains at lr_* x this (official init_lr / lrate)
    # multistep: x lr_decay at each milestone (SD-LoRA's code); cosine: the CosineSchedule of the CODA-Prompt and
    # InfLoRA code (their Adam runs), epoch e of K at lr * cos(99 pi e / (200 (K - 1)))
    schedule: str = choice("multistep", "cosine", methods=TRAINED)
    milestones: list[int] = owned([], *TRAINED)
    lr_decay: float = owned(0.1, *TRAINED)
    batch_size: int = 128
    grad_clip: float = owned(0.0, *TRAINED)  # 0: off


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
    num_tasks: int = resolved(0)  # 0: the benchmark's default
    classes_per_task: int = 0  # 0: from num_tasks
    class_order_seed: int = -1  # -1: the benchmark's default seed
    image_size: int = resolved(0)  # 0: the benchmark's default
    input_scaling: str = choice("unit", "backbone")  # unit: pixels in [0,1], no mean/std (published numbers)
    # auto: the benchmark's own (crop_flip for the paper's benchmarks and imagefolder, none for digits/omniglot)
    augment: str = choice("auto", "none", "crop_flip")
    max_train_per_class: int = 0  # 0: all; a cap for quick runs and tests
    max_test_per_class: int = 0
    # Share of each class's training images held out as a validation split for model selection (seeded by the
    # class, so every run and trial holds out the same images; carved before max_train_per_class). 0: off, as in
    # pipelines/run.py; sweeps default to SWEEP_VAL_FRACTION and refuse 0, since they must never select on test data.
    val_fraction: float = 0.0
    # '' : all; else a file of class folder names (one per line) or a comma list; benchmarks whose loader supports it
    classes: str = ""
    cache_dir: str = ""  # decoded-data cache ('' : $SLORA_CACHE_DIR, else ~/.cache/slora-sweep)


@dataclass
class InfLoRAConfig:
    """InfLoRA's own keys (its rank is adapter.rank). DualGPM keeps the directions holding a fraction eps_t of the
    input energy, eps_t rising linearly from threshold_begin at the first task towards threshold_end: official
    lamb/lame, 0.95 -> 1.0 on CIFAR-100 and DomainNet (configs/cifar100_inflora.json), 0.98 -> 1.0 on ImageNet-R."""

    threshold_begin: float = owned(0.95, "inflora")
    threshold_end: float = owned(1.0, "inflora")


@dataclass
class CodaPromptConfig:
    """CODA-Prompt's own keys; official prompt_param 100 8 0.0 (github.com/GT-RIPL/CODA-Prompt, README and configs)."""

    pool_size: int = owned(100, "coda_prompt")  # components in all; each task owns pool_size / tasks of them
    length: int = owned(8, "coda_prompt")  # prompt length: half prefix keys, half prefix values
    ortho_mu: float = owned(0.0, "coda_prompt")  # orthogonality penalty on components, keys, attention vectors


@dataclass
class L2PConfig:
    """L2P's own keys; official prompt_param 30 20 -1 of CODA-Prompt's L2P (pool, length, first block only), top 5,
    and the pull term added as that code adds it (coefficient 1, slora/learners/l2p.py)."""

    pool_size: int = owned(30, "l2p")
    length: int = owned(20, "l2p")
    top_k: int = owned(5, "l2p")
    pull_coefficient: float = owned(1.0, "l2p")


@dataclass
class DualPromptConfig:
    """DualPrompt's own keys; official prompt_param 10 20 6 of CODA-Prompt's DualPrompt (E-pool, E-length, G-length)."""

    pool_size: int = owned(10, "dualprompt")  # E-prompts: one per task, so at least the number of tasks
    length: int = owned(20, "dualprompt")  # E-prompt length: half prefix keys, half prefix values
    g_length: int = owned(6, "dualprompt")  # G-prompt length
    pull_coefficient: float = owned(1.0, "dualprompt")  # weight of 1 - cos(query, the task's key)


# Bumped whenever a change alters what a run produces for the same config (v2: plain sequential LoRA under
# semantics=paper, exact KD absorption, val_/test_ scores; v3: each rival's official head init, key-pull sums and
# CODA-Prompt's classical Gram-Schmidt): a study or comparison reuses only results and sweeps of the current version.
RESULTS_VERSION = 3
SWEEP_VAL_FRACTION = 0.1
# What every stage scores, on each split: `val_<score>` (when a validation split exists) and `test_<score>`.
SCORES = ("accuracy", "accuracy_old", "accuracy_new", "forgetting", "average_incremental_accuracy")
SPLITS = ("val", "test")
SPLIT_SCORES = tuple(f"{split}_{score}" for split in SPLITS for score in SCORES)


@dataclass
class RunConfig:
    """One continual sequence: variant, data, backbone, adapter, optimiser, and where results go."""

    variant: str = "slora"
    semantics: str = choice("official", "paper")  # set by the semantics group (slora/conf/semantics/)
    seed: int = 0
    device: str = resolved("auto")  # auto: cuda when present, else cpu
    precision: str = choice("fp32", "bf16", "fp16")  # autocast dtype of forward passes (slora/precision.py)
    out_dir: str = ""  # '' : runs/<variant>-<benchmark>-<timestamp>
    resume: bool = False  # continue the run in out_dir after its last finished stage (its stage checkpoint)
    save_merged: str = choice("every", "last", "none")
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    inflora: InfLoRAConfig = field(default_factory=InfLoRAConfig)
    coda_prompt: CodaPromptConfig = field(default_factory=CodaPromptConfig)
    l2p: L2PConfig = field(default_factory=L2PConfig)
    dualprompt: DualPromptConfig = field(default_factory=DualPromptConfig)
