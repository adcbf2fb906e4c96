"""``key=value`` command lines -> typed configs, composed by Hydra from slora/conf/ and validated once.

A run config is slora/config.py's dataclasses (the schema) < the benchmark's preset (conf/benchmark/) < the
semantics preset (conf/semantics/) < the method's preset (conf/variant/) < the command line. On top of Hydra's override
grammar sits one thin alias layer: a key may be the bare last part of a unique dotted path (``rank``, ``epochs``,
``data_root``); ``backbone=NAME`` names a timm model and clears the tiny ViT's size overrides; string values need
no quoting. Every error is one line naming the bad value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, TypeVar

import yaml

from .checks import ConfigError, check_choices, validate
from .config import CONF_DIR, RunConfig, group_options
GROUPS = ("benchmark", "variant", "semantics")  # config groups: `benchmark=cifar100` picks conf/benchmark/cifar100.yaml
PLURAL = {"benchmark": "benchmarks", "variant": "variants", "semantics": "semantics"}
BACKBONE_SIZE_FIELDS = ("embed_dim", "depth", "num_heads", "patch_size")
HELP_FLAGS = ("-h", "--help", "help")
T = TypeVar("T")


def check_group(group: str, name: str) -> None:
    if name not in group_options(group):
        raise ConfigError(f"unknown {group} {name!r}; valid {PLURAL[group]}: {', '.join(group_options(group))}")


class Leaf(typing.NamedTuple):
    type: Any
    choices: tuple[str, ...]  # empty: any value of the type
    methods: tuple[str, ...]  # the methods that read it; empty: every method
    resolved: bool = False  # its default means "the benchmark's own" or "auto" (slora.config.resolved)


def leaf_fields(cls: type, prefix: str = "") -> dict[str, Leaf]:
    """Every leaf field of a nested dataclass by dotted path."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(leaf_fields(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = Leaf(hints[f.name], tuple(f.metadata.get("choices", ())),
                                            tuple(f.metadata.get("methods", ())), f.metadata.get("resolved", False))
    return out


def resolved_defaults() -> dict[str, Any]:
    """The run config's fields whose defaults a run resolves (0: the benchmark's own; "auto"), with those defaults."""
    defaults = flat_config(RunConfig())
    return {path: defaults[path] for path, leaf in leaf_fields(RunConfig).items() if leaf.resolved}


def resolve_key(key: str, paths: typing.Iterable[str]) -> str:
    """A dotted path, or the last part of exactly one."""
    paths = list(paths)
    if key in paths:
        return key
    matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"ambiguous key {key!r}: write one of {', '.join(matches)}")
    raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(paths))}")


def split_overrides(args: list[str]) -> dict[str, str]:
    """key=value pairs; Hydra's ``~key`` (no value) is kept as the key ``~key`` with the value ""."""
    out = {}
    for arg in args:
        if "=" not in arg and not arg.startswith("~"):
            raise ConfigError(f"argument {arg!r} is not key=value (e.g. variant=slora_pp benchmark=digits)")
        key, value = arg.split("=", 1) if "=" in arg else (arg, "")
        out[key.strip()] = value.strip()
    return out


def hydra_prefix(key: str) -> tuple[str, str]:
    """Hydra's prefixes: ``++key`` sets (as ``key``), ``+key`` appends a key that must not exist yet, ``~key``
    deletes. -> (prefix, key)."""
    prefix = next(p for p in ("++", "+", "~", "") if key.startswith(p))
    return prefix, key[len(prefix):]


def _prefixed(key: str, value: Any, path: str, pairs: dict[str, Any]) -> Any:
    """What a prefixed key means on a schema where every key exists: ``+key`` is Hydra's own error, ``~key`` drops
    the presets' value for the schema default (as deleting a key leaves its structured default); ``~key=v`` does so
    only where the composed value is v, as in Hydra."""
    prefix, name = hydra_prefix(key)
    if prefix == "+":
        raise ConfigError(f"{key}={value}: could not append to config, an item is already at {path}; write "
                          f"{name}={value}, or ++{name}={value} to add or override it")
    if prefix != "~":
        return value
    if value not in ("", None):
        current = flat_config(compose_run({k: v for k, v in pairs.items() if k != key}))[path]
        if str(current) != str(value):
            raise ConfigError(f"{key}={value}: {path} is {current} here, not {value}; write ~{name} to reset it")
    return flat_config(RunConfig())[path]


def wants_help(argv: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def wants_config(argv: list[str]) -> tuple[bool, list[str]]:
    """``--cfg job`` (Hydra's flag): print the composed config instead of running."""
    if "--cfg" not in argv:
        return False, argv
    at = argv.index("--cfg")
    if argv[at + 1: at + 2] != ["job"]:
        raise ConfigError("--cfg takes one value here: job (the composed config)")
    return True, argv[:at] + argv[at + 2:]


MULTIRUN_FLAGS = ("-m", "--multirun")


def wants_multirun(argv: list[str]) -> tuple[bool, list[str]]:
    """Hydra's ``-m`` / ``--multirun``: run every point of the grid the sweep values span."""
    return any(arg in MULTIRUN_FLAGS for arg in argv), [arg for arg in argv if arg not in MULTIRUN_FLAGS]


def expand_sweeps(argv: list[str]) -> list[list[str]]:
    """Hydra's basic sweeper: each comma list, ``range(a,b[,step])`` or ``choice(...)`` value is an axis; -> the
    key=value list of every point of their grid, the first swept key varying slowest. A quoted value or a [list] is
    one value, as in Hydra."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    split_overrides(argv)  # every argument is key=value, or a one-line error says which is not
    parser, axes = OverridesParser.create(), []
    for arg in argv:
        key, value = arg.split("=", 1) if "=" in arg else (arg, "")
        if not any(mark in value for mark in (",", "range(", "choice(")):  # plain values: paths parse as they are
            axes.append([arg])
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception as err:  # Hydra's grammar error: one line naming the argument
            raise ConfigError(f"{arg}: {one_line(err)}") from None
        if override.is_sweep_override():
            axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:  # a quoted value is the string inside the quotes; a [list] stays as written
            axes.append([f"{key}={override.value()}" if value[:1] in "'\"" else arg])
    return [list(point) for point in itertools.product(*axes)]


# -- the run config --------------------------------------------------------------------------------------------
def reads(path: str, variant: str) -> bool:
    """Whether method ``variant`` reads run key ``path`` (slora.config.owned: no owners means every method)."""
    owners = leaf_fields(RunConfig)[path].methods
    return not owners or variant in owners


def check_read(key: str, value: Any, path: str, variant: str) -> None:
    """The one rule: a key the method does not read is an error naming the method and the methods that read it,
    whatever its value (a value equal to the default would be ignored just the same)."""
    if not reads(path, variant):
        raise ConfigError(f"{key}={value}: variant={variant} does not read {path}; the methods that read it: "
                          f"{', '.join(leaf_fields(RunConfig)[path].methods)}")


def keys_read(pairs: dict[str, Any], variant: str) -> tuple[dict[str, Any], list[str]]:
    """A multi-method harness's shared run keys (study, compare, a saved trial's full config) split into those
    ``variant`` reads and the paths of those it does not, which the harness names instead of passing."""
    fields, kept, unread = leaf_fields(RunConfig), {}, []
    for key, value in pairs.items():
        path = key if key in GROUPS or key == "backbone" else resolve_key(key, fields)
        if path in fields and not reads(path, variant):
            unread.append(path)
        else:
            kept[key] = value
    return kept, unread


def keys_for(variant: str, pairs: dict[str, Any], say: Callable[[str], None] = print) -> dict[str, Any]:
    """``keys_read``'s kept keys, saying which shared keys ``variant`` is not given."""
    kept, unread = keys_read(pairs, variant)
    if unread:
        say(f"{variant} does not read {', '.join(unread)}: not passed to it")
    return kept


def compose_run(overrides: list[str] | dict[str, Any]) -> RunConfig:
    """Compose, type and validate a run config from command-line pairs (text) or typed values (sampled ones)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(_compose(_hydra_overrides(overrides)))
    validate(cfg)
    return cfg


def compose_yaml(overrides: list[str] | dict[str, Any]) -> str:
    from omegaconf import OmegaConf

    cfg = compose_run(overrides)
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    ConfigStore.instance().store(name="run_schema", node=RunConfig)  # idempotent: the same node every time
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="run", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(one_line(err)) from None


def one_line(err: BaseException) -> str:
    """Hydra and OmegaConf explain over several lines; keep the innermost cause, naming its key."""
    from omegaconf.errors import OmegaConfBaseException

    while err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, OmegaConfBaseException) and getattr(err, "full_key", None):
        return f"{err.full_key}: {str(err.msg).splitlines()[0]}"
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def _hydra_overrides(overrides: list[str] | dict[str, Any]) -> list[str]:
    """The alias layer: short keys resolved, groups picked, values written in Hydra's override grammar."""
    pairs = split_overrides(overrides) if isinstance(overrides, list) else dict(overrides)
    fields = leaf_fields(RunConfig)
    out, given = [], set()
    for key, value in pairs.items():
        key = key.removeprefix("++")  # Hydra's add-or-override: every key exists, so a plain override
        if key in ("benchmark", "data.benchmark", "variant", "semantics"):
            group = key.rsplit(".", 1)[-1]
            check_group(group, str(value))
            out.append(f"{group}={value}")
            continue
        name = hydra_prefix(key)[1]
        if name in GROUPS and name != key:
            raise ConfigError(f"{key}: the {name} group always has one preset; choose another with {name}=NAME "
                              f"({', '.join(group_options(name))})")
        path = "backbone.name" if name == "backbone" else resolve_key(name, fields)
        value = _prefixed(key, value, path, pairs)
        check_read(key, value, path, str(pairs.get("variant", RunConfig.variant)))
        given.add(path)
        out.append(f"{path}={_grammar(value, fields[path].type)}")
    if "backbone" in pairs:  # a real timm name: its own sizes, not the tiny ViT's
        out += [f"backbone.{name}=0" for name in BACKBONE_SIZE_FIELDS if f"backbone.{name}" not in given]
    return out


def _grammar(value: Any, kind: Any) -> str:
    """A value as Hydra's grammar reads it: strings quoted (paths, comma lists), lists in brackets."""
    if typing.get_origin(kind) is list:
        if isinstance(value, str):
            text = value.strip().replace("(", "[").replace(")", "]")
            return text if text.startswith("[") else f"[{text}]"
        inner = typing.get_args(kind)[0]
        return "[" + ",".join(_grammar(v, inner) for v in value) + "]"
    if kind is str:
        text = str(value)
        quote = '"' if "'" in text else "'"
        if quote in text and '"' in text:
            raise ConfigError(f"value {text!r}: use either single or double quotes, not both")
        return f"{quote}{text}{quote}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flat_config(cfg: Any) -> dict[str, Any]:
    """The resolved config as dotted path -> value (MLflow params, Parquet columns)."""
    out = {}
    for path in leaf_fields(type(cfg)):
        value = cfg
        for name in path.split("."):
            value = getattr(value, name)
        out[path] = value
    return out


def from_dict(cls: type[T], data: dict) -> T:
    """A saved config (results.json, ``to_dict`` output) back as the typed object: no presets, exactly as saved."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), data))
    except OmegaConfBaseException as err:
        raise ConfigError(one_line(err)) from None
    check_choices(obj)
    return obj


def check_value(path: str, value: Any) -> None:
    """One value of a run key (a search space's choice), typed and checked against the key's choices."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    leaf = leaf_fields(RunConfig)[path]
    if typing.get_origin(leaf.type) is list and isinstance(value, str):  # a categorical list, written as text
        value = yaml.safe_load(value)
    try:
        OmegaConf.update(OmegaConf.structured(RunConfig), path, value)
    except OmegaConfBaseException as err:
        raise ConfigError(one_line(err)) from None
    if leaf.choices and value not in leaf.choices:
        raise ConfigError(f"{path}={value!r} is not valid; choose one of {', '.join(leaf.choices)}")


def parse_options(cls: type[T], pairs: dict[str, str], base: T | None = None) -> T:
    """Flat ``key=value`` options of a one-level dataclass (a sweep's, pretraining's), typed by OmegaConf."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    fields = leaf_fields(cls)
    dotlist = [f"{resolve_key(k, fields)}={v}" for k, v in pairs.items()]
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base or cls), OmegaConf.from_dotlist(dotlist)))
    except OmegaConfBaseException as err:
        raise ConfigError(one_line(err)) from None
    check_choices(obj)
    return obj


# -- --help ----------------------------------------------------------------------------------------------------
def describe_keys(config: Any) -> str:
    """Every key of a (nested) config dataclass with its default, and its choices where the field fixes them."""
    lines = []
    for path, value in flat_config(config).items():
        shown = value if isinstance(value, str) and value else repr(value)
        choices = leaf_fields(type(config))[path].choices
        lines.append(f"  {path}={shown}" + (f"   ({' | '.join(choices)})" if choices else ""))
    return "\n".join(lines)


def run_keys_help() -> str:
    groups = "\n".join(f"  {g}=: {', '.join(group_options(g))}   (slora/conf/{g}/)" for g in GROUPS)
    return ("Run keys (key=value; a unique last part is enough, e.g. rank=8; backbone=NAME for backbone.name). "
            "Defaults before the benchmark's preset and semantics=paper, which change some of them (slora/conf/); "
            "--cfg job prints the composed config:\n" + describe_keys(RunConfig()) + "\nConfig groups:\n" + groups)
