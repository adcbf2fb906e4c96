"""S-LoRA (SD-LoRA, ICLR 2025) as a method package, in the shape of PEFT's LoRA tuner: the directions on one qkv
projection (adapter.py), how a forward adds them and which way is cheaper (compute.py), KD's absorption (kd.py),
the model holding them with the magnitudes (model.py), the variants' flags (variants.py) and the Learner the stage
loop drives (learner.py). docs/method.md has the formulas."""

from .learner import SLoRALearner
from .model import SLoRAViT
from .variants import SLORA_VARIANTS, SLoRAVariant

__all__ = ["SLORA_VARIANTS", "SLoRALearner", "SLoRAVariant", "SLoRAViT"]
