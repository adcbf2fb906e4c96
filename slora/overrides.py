"""``key=value`` overrides of a typed dataclass config, with one-line errors that list the valid choices.

A key is a dotted path (``optim.lr_magnitude``) or, when it names one field only, the bare field name
(``rank``, ``epochs``, ``data_root``). Values are parsed by the field's declared type.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from .config import BENCHMARK_NAMES, BENCHMARK_PRESETS, PAPER_PRESET, RunConfig, check_benchmark_name
from .variants import VARIANTS, get_variant

# Short names a user types often; `backbone=NAME` also clears the tiny-ViT size overrides (a real timm name).
ALIASES = {"benchmark": "data.benchmark", "backbone": "backbone.name"}
BACKBONE_SIZE_FIELDS = ("embed_dim", "depth", "num_heads", "patch_size")


class ConfigError(ValueError):
    pass


def field_paths(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of a nested dataclass, as dotted path -> declared type."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(field_paths(kind, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = kind
    return out


def resolve_key(key: str, paths: dict[str, Any]) -> str:
    if key in ALIASES:
        return ALIASES[key]
    if key in paths:
        return key
    matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"ambiguous key {key!r}: write one of {', '.join(matches)}")
    raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(paths))}")


def parse_value(path: str, text: Any, kind: Any) -> Any:
    """Coerce a command-line string (or an already typed value) to the field's type."""
    origin = get_origin(kind)
    if origin is Literal:
        choices = get_args(kind)
        if text not in choices:
            raise ConfigError(f"{path}={text!r} is not valid; choose one of {', '.join(map(str, choices))}")
        return text
    if kind is bool:
        if isinstance(text, bool):
            return text
        if str(text).lower() in ("true", "1", "yes"):
            return True
        if str(text).lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{path}={text!r} is not a boolean; use true or false")
    if kind in (int, float):
        try:
            value = kind(text) if not isinstance(text, str) else kind(ast.literal_eval(text))
        except (ValueError, SyntaxError, TypeError):
            raise ConfigError(f"{path}={text!r} is not a{'n integer' if kind is int else ' number'}") from None
        return value
    if kind is str:
        return str(text)
    if origin is tuple:
        value = text
        if isinstance(text, str):
            try:
                value = ast.literal_eval(text) if text.strip() else ()
            except (ValueError, SyntaxError):
                value = tuple(part.strip() for part in text.split(",") if part.strip())
        if not isinstance(value, (list, tuple)):
            value = (value,)
        inner = get_args(kind)[0]
        return tuple(parse_value(path, v, inner) for v in value)
    raise ConfigError(f"{path}: unsupported field type {kind}")


def set_path(cfg: Any, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        cfg = getattr(cfg, name)
    setattr(cfg, leaf, value)


def get_path(cfg: Any, path: str) -> Any:
    for name in path.split("."):
        cfg = getattr(cfg, name)
    return cfg


HELP_FLAGS = ("-h", "--help", "help")


def wants_help(argv: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def describe_keys(config: Any) -> str:
    """Every key of a (nested) config dataclass with its default, and its choices where the type fixes them."""
    lines = []
    for path, kind in field_paths(type(config)).items():
        value = get_path(config, path)
        shown = value if isinstance(value, str) and value else repr(value)
        choices = f"   ({' | '.join(map(str, get_args(kind)))})" if get_origin(kind) is Literal else ""
        lines.append(f"  {path}={shown}{choices}")
    return "\n".join(lines)


def run_keys_help() -> str:
    short = ", ".join(f"{k}= for {v}" for k, v in ALIASES.items())
    return (f"Run keys (key=value; a unique last part is enough, e.g. rank=8; {short}). Defaults before the "
            f"benchmark's preset and semantics=paper, which change some of them (slora/config.py):\n"
            + describe_keys(RunConfig())
            + f"\nvariants: {', '.join(VARIANTS)}\nbenchmarks: {', '.join(BENCHMARK_NAMES)}")


def split_overrides(args: list[str]) -> dict[str, str]:
    out = {}
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not key=value (e.g. variant=slora_pp benchmark=digits)")
        key, value = arg.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def build_config(overrides: dict[str, Any] | list[str], base: RunConfig | None = None) -> RunConfig:
    """Defaults, the benchmark's preset, the semantics=paper preset (if chosen), the user's overrides; validate."""
    if isinstance(overrides, list):
        overrides = split_overrides(overrides)
    cfg = base or RunConfig()
    paths = field_paths(RunConfig)
    resolved = {resolve_key(k, paths): (k, v) for k, v in overrides.items()}
    if "data.benchmark" in resolved:
        cfg.data.benchmark = resolved["data.benchmark"][1]
        try:
            check_benchmark_name(cfg.data.benchmark)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    for path, value in BENCHMARK_PRESETS.get(cfg.data.benchmark, {}).items():
        if path not in resolved:
            set_path(cfg, path, value)
    if "semantics" in resolved:
        cfg.semantics = parse_value("semantics", resolved["semantics"][1], paths["semantics"])
    if cfg.semantics == "paper":
        for path, value in PAPER_PRESET.items():
            if path not in resolved:
                set_path(cfg, path, value)
    if "backbone.name" in resolved:
        for name in BACKBONE_SIZE_FIELDS:
            if f"backbone.{name}" not in resolved:
                setattr(cfg.backbone, name, 0)
    for path, (_, value) in resolved.items():
        set_path(cfg, path, parse_value(path, value, paths[path]))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Everything checkable before any work starts; each failure is one line naming the value."""
    try:
        get_variant(cfg.variant)
        check_benchmark_name(cfg.data.benchmark)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    positive = {
        "adapter.rank": cfg.adapter.rank,
        "optim.lr_direction": cfg.optim.lr_direction,
        "optim.lr_magnitude": cfg.optim.lr_magnitude,
        "optim.lr_head": cfg.optim.lr_head,
        "optim.first_task_lr_scale": cfg.optim.first_task_lr_scale,
        "optim.epochs": cfg.optim.epochs,
        "optim.batch_size": cfg.optim.batch_size,
    }
    for path, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{path}={value}: must be > 0")
    for path in ("data.num_tasks", "data.classes_per_task", "optim.first_task_epochs", "data.max_train_per_class",
                 "data.max_test_per_class", "data.image_size"):
        if get_path(cfg, path) < 0:
            raise ConfigError(f"{path}={get_path(cfg, path)}: must be >= 0")
    for entry in cfg.adapter.rank_schedule:
        if len(entry) != 2 or entry[0] < 0 or entry[1] <= 0:
            raise ConfigError(f"adapter.rank_schedule={cfg.adapter.rank_schedule!r}: give (from_task>=0, rank>0) "
                              f"pairs, e.g. [[4,8],[8,6]]")
    if not 0 <= cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction={cfg.data.val_fraction}: must lie in [0, 1) (0: no validation split)")
    if cfg.adapter.kd_threshold < 0:
        raise ConfigError(f"adapter.kd_threshold={cfg.adapter.kd_threshold}: must be >= 0")
    bad = [t for t in cfg.adapter.targets if t not in ("q", "k", "v")]
    if bad or not cfg.adapter.targets:
        raise ConfigError(f"adapter.targets={cfg.adapter.targets!r}: choose among q, k, v")
    checkpoint = cfg.backbone.checkpoint
    local = checkpoint and not checkpoint.startswith("hf-hub:")
    if local and not Path(checkpoint.removeprefix("local-dir:")).expanduser().exists():
        raise ConfigError(f"backbone.checkpoint={cfg.backbone.checkpoint}: no such file or folder")


def config_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flat_config(cfg: Any) -> dict[str, Any]:
    """The resolved config as dotted path -> value (MLflow params, Parquet columns)."""
    return {path: get_path(cfg, path) for path in field_paths(type(cfg))}


def config_from_dict(data: dict) -> RunConfig:
    """Rebuild a RunConfig from ``config_dict`` output (results.json, Ray's train_loop_config)."""
    paths = field_paths(RunConfig)
    cfg = RunConfig()
    flat = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(data, "")
    for path, value in flat.items():
        if path not in paths:
            raise ConfigError(f"unknown config key {path!r} in a saved config")
        set_path(cfg, path, parse_value(path, value, paths[path]))
    return cfg
