"""The tuned comparison no paper reports: every method gets the same number of trials over its own search space
(one sweep each, not ``variant=all``, whose sampling splits trials unevenly), the first of them its official
settings (preset_first); its best configuration is selected on the validation split, and that configuration and
the method's official settings are each run on the same seeds and reported on test, mean ± std.

``python pipelines/compare.py methods=slora,inflora,coda_prompt,l2p,simplecil,seq_ft,dualprompt num_samples=8 seeds=3
out_dir=runs/compare [sweep keys: scheduler=, search_seed=, ...] [run keys: benchmark=, data_root=, epochs=, ...]``

It resumes where it stopped: a method whose sweep finished (its summary.json says complete) is not swept again, an
interrupted sweep continues (resume=true, same name), and a seed run whose folder holds results of the same config is
reused. A sweep on disk that searched another space or base (its sweep.json records both) is refused before anything
runs, so an edited search space never reports a stale selection.
The table goes to stdout, compare.parquet, compare.md and to an MLflow run (kind "comparison") in the sweeps'
experiment. Seed runs keep the sweeps' validation split, so the tuned rows are trained on what the sweep trained on.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.tables import finished_results, markdown_cells
from pipelines.sweeper import tracking
from pipelines.sweeper.options import SweepConfig, absolute_paths, parse_sweep_args
from pipelines.sweeper.tuner import changed_inputs, run_sweep, stop_ray, sweep_inputs
from search_spaces import load_space
from slora.config import SWEEP_VAL_FRACTION, RunConfig
from slora.configure import ConfigError, compose_run, keys_read, leaf_fields, split_overrides
from slora.data import load_benchmark
from slora.runner import run_continual
from slora.seeds import seed_config

METHODS = "slora,inflora,coda_prompt,l2p,simplecil,seq_ft,dualprompt"
NOT_A_SETTING = ("out_dir", "progress", "resume", "save_merged", "device")  # a trial's params that are not its config


def main(argv: list[str]) -> int:
    try:
        options = split_overrides(argv)
        methods = options.pop("methods", METHODS).split(",")
        num_samples, seeds = int(options.pop("num_samples", 8)), int(options.pop("seeds", 3))
        out_dir = Path(options.pop("out_dir", "runs/compare")).resolve()
        sweep_names = {f.name for f in fields(SweepConfig)}
        sweep_keys = {k: options.pop(k) for k in list(options) if k in sweep_names or k.startswith("space.")}
        protocol = {}
        for method in methods:  # every setting, and every sweep already on disk, checked before any sweep starts
            try:
                protocol[method] = method_keys(method, sweep_keys, options)
                check_reusable(method, num_samples, out_dir / "sweeps", *protocol[method])
                compose_run({**run_keys(protocol[method][1]), "variant": method})
            except (ConfigError, ValueError) as err:
                raise ConfigError(f"{method}: {err}") from err
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    order_seed = load_benchmark(compose_run({**run_keys(protocol[methods[0]][1]), "variant": methods[0]}).data
                                ).order_seed
    try:
        rows = compare(num_samples, seeds, out_dir, protocol, order_seed)
    except SweepIncomplete as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    finally:  # the one local Ray instance every sweep ran on (tuned_sweep)
        if "ray" in sys.modules and not sweep_keys.get("address"):
            stop_ray()
    table = comparison_table(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out_dir / "compare.parquet")
    (out_dir / "compare.md").write_text(table + "\n")
    log_to_mlflow(sweep_keys, out_dir, rows)
    print(table)
    return 0


def run_keys(options: dict) -> dict:
    """A seed run's keys: the protocol's, the sweeps' validation split (so tuned rows train on what their sweep
    trained on), and no progress bars or exports."""
    return {"data.val_fraction": str(SWEEP_VAL_FRACTION), **options, "progress": "false", "save_merged": "none"}


def method_keys(method: str, sweep_keys: dict, options: dict) -> tuple[dict, dict]:
    """The protocol's sweep and run keys that ``method`` reads. A shared key only other methods read (SimpleCIL
    trains nothing, so it reads no optimiser key) is not passed to it, and the command says so."""
    spaces, unread_space = keys_read({k.removeprefix("space."): v for k, v in sweep_keys.items()
                                      if k.startswith("space.")}, method)
    options, unread = keys_read(options, method)
    if unread or unread_space:
        print(f"{method} does not read {', '.join(sorted({*unread, *unread_space}))}: not passed to it", flush=True)
    return ({**{k: v for k, v in sweep_keys.items() if not k.startswith("space.")},
             **{f"space.{k}": v for k, v in spaces.items()}}, options)


def compare(num_samples, seeds, out_dir, protocol, order_seed) -> list[dict]:
    """Each method's sweep, then its official and tuned settings on every seed -> one row per (method, settings,
    seed). ``protocol``: each method's (sweep keys, run keys), from method_keys."""
    rows = []
    for method, (sweep_keys, options) in protocol.items():
        best, preset = tuned_sweep(method, num_samples, out_dir / "sweeps", sweep_keys, options)
        tuned, _ = keys_read({k: v for k, v in best.items() if k in leaf_fields(RunConfig) and k not in NOT_A_SETTING
                              }, method)  # a trial logs every key, also those its method ignores
        official = compose_run({**run_keys(options), "variant": method})
        settings = {"official": official, "tuned": compose_run({**tuned, "progress": "false", "save_merged": "none"})}
        if preset and all(str(best.get(k)) == str(v) for k, v in preset.items()):
            print(f"{method}: its official settings (the sweep's first trial) won on validation; tuned = official",
                  flush=True)
            settings["tuned"] = official  # the same runs: the official seeds' results stand for both rows
        for label, base in settings.items():
            for s in range(seeds):
                name = f"{method}-{'official' if base is official else label}-{s}"
                cfg = replace(seed_config(base, s, order_seed), out_dir=str(out_dir / "runs" / name))
                results = finished_results(cfg) or run_continual(cfg, log=lambda *_: None)
                rows.append({"method": method, "settings": label, "seed": s,
                             **{k: results[f"final_{k}"] for k in ("val_accuracy", "test_accuracy",
                                                                    "test_average_incremental_accuracy",
                                                                    "test_forgetting")},
                             "stored_parameters": results["stored_parameters"],
                             "seconds": sum(stage["stage_seconds"] for stage in results["stages"])})
                print(f"{method:>11} {label:>8} seed {s}: test acc {rows[-1]['test_accuracy']:.2%}", flush=True)
    return rows


class SweepIncomplete(RuntimeError):
    pass


def tuned_sweep(method: str, num_samples: int, sweeps_dir: Path, sweep_keys: dict,
                options: dict) -> tuple[dict, dict]:
    """The method's sweep (resumed if interrupted, skipped if finished) -> (its best finished trial, chosen on val;
    the official settings' values it started from, {} if none)."""
    out = sweeps_dir / f"compare-{method}"
    summary_file = out / "summary.json"
    if not (summary_file.is_file() and json.loads(summary_file.read_text()).get("complete")):
        resume = ["resume=true"] if (out / "sweep.json").is_file() else []
        # one local Ray instance for all the methods' sweeps: its start-up is paid once
        run_sweep(*parse_sweep_args(sweep_args(method, num_samples, sweeps_dir, sweep_keys, options) + resume),
                  shared_ray=True)
    summary = json.loads(summary_file.read_text())
    if not summary.get("complete"):  # stopped part-way (Ctrl-C, a lost head): its best is not yet the best
        counts = summary.get("statuses", {})  # "pruned" is Tune's word; the user reads ASHA's
        ended = ", ".join(f"{n} {'stopped by ASHA' if s == 'pruned' else s}" for s, n in counts.items() if n)
        raise SweepIncomplete(f"the {method} sweep stopped before its end ({summary['trials']} of {num_samples} "
                              f"trials started: {ended or 'none ended'}); run the same command again to go on")
    if "best" not in summary:
        raise RuntimeError(f"the {method} sweep finished no trial ({summary_file}); rerun with more num_samples")
    first = json.loads((out / "sweep.json").read_text()).get("first_trials") or [{}]
    return summary["best"], first[0]


def sweep_args(method: str, num_samples: int, sweeps_dir: Path, sweep_keys: dict, options: dict) -> list[str]:
    name = f"compare-{method}"
    return [f"variant={method}", f"num_samples={num_samples}", f"name={name}", f"out_dir={sweeps_dir / name}",
            *(f"{k}={v}" for k, v in {"preset_first": "true", **sweep_keys, **options}.items())]


def check_reusable(method: str, num_samples: int, sweeps_dir: Path, sweep_keys: dict, options: dict) -> None:
    """The method's sweep settings are valid (its official settings, the first trial, lie in its space), and a sweep
    of it already in sweeps_dir (finished or not) searched the same space over the same base: else reusing it would
    report a stale selection (ConfigError)."""
    sweep, run_overrides, space_overrides = parse_sweep_args(sweep_args(method, num_samples, sweeps_dir, sweep_keys,
                                                                        options))
    run_overrides = absolute_paths(run_overrides)
    current = sweep_inputs(sweep, load_space(sweep.variant, space_overrides), compose_run(run_overrides),
                           run_overrides)  # also checks that the official settings lie in the space
    state_file = sweeps_dir / f"compare-{method}" / "sweep.json"
    if state_file.is_file() and (changed := changed_inputs(json.loads(state_file.read_text()), current)):
        raise ConfigError(f"its sweep in {state_file.parent} ran with other {changed}: move it away to sweep again, "
                          "or use another out_dir")


def comparison_table(rows: list[dict]) -> str:
    lines = ["| method | settings | val Acc | test Acc | test AAA | test forgetting | stored params "
             "| seconds per run |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["settings"]), []).append(r)
    for (method, label), group in groups.items():
        cells = markdown_cells(group, ("val_accuracy", "test_accuracy", "test_average_incremental_accuracy",
                                       "test_forgetting"))
        lines.append(f"| {method} | {label} | {' | '.join(cells)} | "
                     f"{sum(g['stored_parameters'] for g in group) / len(group):,.0f} | "
                     f"{sum(g['seconds'] for g in group) / len(group):.0f} |")
    return "\n".join(lines)


def log_to_mlflow(sweep_keys: dict, out_dir: Path, rows: list[dict]) -> None:
    """One run of kind "comparison" in the sweeps' experiment, holding the table: each row's mean and spread over
    its seeds, and every seed's score."""
    sweep = SweepConfig(**{k: v for k, v in sweep_keys.items() if k in ("tracking_uri", "experiment")})  # as swept
    uri = sweep.tracking_uri or tracking.default_tracking_uri(Path.cwd())
    tracking.log_table(uri, sweep.experiment, f"comparison-{out_dir.name}", "comparison", rows, ("method", "settings"),
                       ("val_accuracy", "test_accuracy", "test_average_incremental_accuracy", "test_forgetting"),
                       [out_dir / "compare.md", out_dir / "compare.parquet"])


def cli() -> None:
    """The `slora-compare` console script (pyproject.toml [project.scripts])."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
