"""The test helpers live in tests/tiny.py; this file makes them importable and pins torch to one thread."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The tests' ViTs are tiny: one thread is several times faster than contending for the cores.
torch.set_num_threads(1)
