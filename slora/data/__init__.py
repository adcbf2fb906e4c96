"""Benchmarks: class-incremental task splits of image datasets held as uint8 tensors."""

from .benchmark import Benchmark
from .catalog import BENCHMARKS, load_benchmark

__all__ = ["Benchmark", "BENCHMARKS", "load_benchmark"]
