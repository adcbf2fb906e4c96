"""Search spaces, one YAML file per variant (plus `all`), turned into an Optuna define-by-run function.

A parameter is a config key with one of ``choice``, ``loguniform``, ``uniform``, ``int``, ``value`` or ``grid``, and
an optional ``when: {key: [values]}``: it is sampled only when those earlier keys took one of those values. A
``grid`` axis is not sampled: each of its values gets num_samples trials, as Tune's grid_search does.
Command-line overrides: ``space.KEY=[a,b,c]`` replaces the choices, ``space.KEY=x`` fixes the parameter; a sweep's
``KEY=a,b`` (pipelines/sweeper/options.py) is a grid axis.
"""

from __future__ import annotations

import ast
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slora.config import RunConfig
from slora.configure import ConfigError, check_read, check_value, leaf_fields, resolve_key

SPACES_DIR = Path(__file__).parent
KINDS = ("choice", "loguniform", "uniform", "int", "value", "grid")


@dataclass
class Param:
    key: str  # resolved dotted config path, e.g. adapter.rank
    kind: str
    args: Any
    when: dict[str, list] = field(default_factory=dict)

    def applies_to(self, config: dict[str, Any]) -> bool:
        """Whether a trial with these values samples this parameter; compared as text, since MLflow keeps
        params as strings."""
        return all(str(config.get(k)) in map(str, allowed) for k, allowed in self.when.items())


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name: str, overrides: dict[str, str] | None = None) -> list[Param]:
    path = SPACES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no search space {name!r}; valid spaces: {', '.join(available_spaces())}")
    raw = yaml.safe_load(path.read_text()) or {}
    paths = leaf_fields(RunConfig)
    params = {}
    for key, spec in raw.items():
        params[resolve_key(key, paths)] = _param(key, spec, paths)
    for key, text in (overrides or {}).items():
        resolved = resolve_key(key, paths)
        value = text if isinstance(text, dict) else _literal(text)  # a dict: a whole spec (a sweep's grid axis)
        spec = value if isinstance(value, dict) else {"choice": list(value)} if isinstance(value, (list, tuple)) \
            else {"value": value}
        if resolved in params:
            spec["when"] = params[resolved].when
        params[resolved] = _param(key, spec, paths)
    return list(params.values())


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):  # [sgd,adam]: a list of bare words, as YAML (and Hydra) read it
        return yaml.safe_load(text) if text.strip().startswith("[") else text


def _param(key: str, spec: dict, paths: dict) -> Param:
    resolved = resolve_key(key, paths)
    kinds = [k for k in spec if k in KINDS]
    unknown = [k for k in spec if k not in KINDS and k != "when"]
    if len(kinds) != 1 or unknown:
        raise ConfigError(f"space entry {key}: give exactly one of {', '.join(KINDS)} (and optionally when)")
    kind = kinds[0]
    args = spec[kind]
    values = args if kind in ("choice", "grid") else [args] if kind == "value" else []
    if kind == "grid" and (spec.get("when") or not isinstance(args, list) or not args):
        raise ConfigError(f"space entry {key}: a grid axis is a non-empty list of values every trial set runs, "
                          "with no condition")
    for v in values:  # every choice must parse as the field's type now, not inside a trial
        check_value(resolved, v)
    if kind in ("loguniform", "uniform", "int"):
        if not (isinstance(args, (list, tuple)) and len(args) == 2 and args[0] < args[1]):
            raise ConfigError(f"space entry {key}: {kind} needs [low, high] with low < high, got {args!r}")
        if kind == "loguniform" and args[0] <= 0:
            raise ConfigError(f"space entry {key}: loguniform needs low > 0, got {args!r}")
    when = {resolve_key(k, paths): list(v) for k, v in (spec.get("when") or {}).items()}
    return Param(resolved, kind, args, when)


class DefineByRun:
    """Optuna define-by-run space: samples each active parameter; conditions read earlier samples or `fixed`.

    A class rather than a closure: Tune pickles the searcher (with this) into the sweep's resume state.
    """

    def __init__(self, params: list[Param], fixed: dict[str, Any]):
        self.params, self.fixed = params, fixed
        self.calls = 0  # trials suggested so far: the grid point of the next one (pickled with the searcher)

    def __call__(self, trial) -> dict[str, Any] | None:
        """Samples the trial's values; -> its grid point (returned values are constants to Optuna, as Tune's
        grid_search is to its searchers: trial i runs point i mod the grid's size, so the grid repeats every
        that-many trials, each grid point getting num_samples trials)."""
        point = grid_point(self.params, self.calls)
        self.calls += 1
        chosen = dict(point)
        for p in self.params:
            if p.kind in ("value", "grid") or not p.applies_to({**self.fixed, **chosen}):
                continue  # fixed values are constants the sweep merges into every trial's config
            if p.kind == "choice":
                chosen[p.key] = trial.suggest_categorical(p.key, list(p.args))
            elif p.kind == "int":
                chosen[p.key] = trial.suggest_int(p.key, int(p.args[0]), int(p.args[1]))
            else:
                chosen[p.key] = trial.suggest_float(p.key, float(p.args[0]), float(p.args[1]),
                                                    log=p.kind == "loguniform")
        return point or None


def grid_size(params: list[Param]) -> int:
    """Points in the grid of the space's ``grid`` axes (1 without any)."""
    return math.prod(len(p.args) for p in params if p.kind == "grid")


def grid_point(params: list[Param], index: int) -> dict[str, Any]:
    """Point ``index`` (mod the size) of the grid, the first axis varying slowest, as Hydra's sweeper orders it."""
    axes = [p for p in params if p.kind == "grid"]
    points = list(itertools.product(*(p.args for p in axes)))
    return dict(zip((p.key for p in axes), points[index % len(points)])) if axes else {}


def as_dict(params: list[Param]) -> dict[str, dict]:
    """The space as its YAML file spells it (overrides applied), e.g. for recording what a sweep searched."""
    return {p.key: {p.kind: p.args, **({"when": p.when} if p.when else {})} for p in params}


def point_of(params: list[Param], config: dict[str, Any]) -> dict[str, Any]:
    """The values a flat config takes on the space's sampled keys (those whose condition it meets), spelled as the
    space spells them; ConfigError names a value the space cannot sample."""
    point: dict[str, Any] = {}
    for p in params:
        if p.kind in ("value", "grid") or not p.applies_to(config):
            continue
        value = config[p.key]
        if p.kind == "choice":
            match = [c for c in p.args if str(c) == str(value)]
            if not match:
                raise ConfigError(f"preset_first: the base's {p.key}={value} is not among the space's choices "
                                  f"{list(p.args)}")
            point[p.key] = match[0]
        elif not p.args[0] <= value <= p.args[1]:
            raise ConfigError(f"preset_first: the base's {p.key}={value} is outside the space's range {list(p.args)}")
        else:
            point[p.key] = int(value) if p.kind == "int" else float(value)
    return point


def constants(params: list[Param]) -> dict[str, Any]:
    return {p.key: p.args for p in params if p.kind == "value"}


def sampled_values(p: Param) -> list[Any]:
    """The values a parameter can take, or its range's bounds."""
    return [p.args] if p.kind == "value" else list(p.args)


def sampled_methods(params: list[Param], variant: str) -> list[str]:
    """The methods a sweep's trials may run: the choices of the space's ``variant`` parameter, else the sweep's."""
    variant_param = next((p for p in params if p.key == "variant"), None)
    return [str(v) for v in sampled_values(variant_param)] if variant_param else [variant]


def methods_sampling(p: Param, methods: list[str]) -> list[str]:
    """Those of ``methods`` a parameter is sampled for (its ``when`` on the variant, if any)."""
    return [m for m in methods if m in map(str, p.when.get("variant", methods))]


def check_reads(params: list[Param], variant: str) -> None:
    """``space.KEY`` obeys the rule ``KEY=`` does: every parameter is read by each method it may be sampled for (the
    sweep's variant, or those of the space's own ``variant`` parameter its ``when`` allows), else a one-line error
    names the method and the methods that read it."""
    methods = sampled_methods(params, variant)
    for p in params:
        for method in methods_sampling(p, methods) if p.key != "variant" else []:
            check_read(f"space.{p.key}", sampled_values(p), p.key, method)
