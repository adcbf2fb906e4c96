"""The end of a sweep: trial statuses, the results table, the best finished trial (selected on validation, reported
on test), the registered model, the Pareto front, the best trial per variant, the MLflow UI command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slora.report import format_table, stage_table

from . import tracking
from .state import SweepRun

if TYPE_CHECKING:  # Ray is imported only once a sweep runs
    from ray.tune import ResultGrid
from .endings import end_trial
from .results import VARIANT_COLUMNS, best_per_variant, pareto_front, results_table, write_table


def _score(row: dict, key: str) -> str:
    """A mean score, with its spread over the trial's seeds when it ran several."""
    spread = row.get(f"{key}_std")
    return f"{row[key]:.2%}" + (f" ± {spread:.2%}" if spread is not None and spread == spread else "")


def finish(run: SweepRun, grid: ResultGrid, log) -> tuple[dict, list[dict], dict[str, str]]:
    """Statuses, the results table, the best finished trial, the registered model, the MLflow UI command;
    -> (summary, results table, {run id: status})."""
    sweep, num_stages, uri, parent = run.sweep, run.num_stages, run.uri, run.target.parent_run_id
    table, run_statuses = results_table(uri, run.target.experiment_id, parent, num_stages,
                                        tune_statuses(grid, num_stages))
    close_runs(uri, run_statuses)
    files = write_table(table, run.out_dir)
    finished = [r for r in table if r["status"] == "finished" and r["stage"] == num_stages]
    interrupted = sum(s == "interrupted" for s in run_statuses.values())
    complete = not interrupted and len(run_statuses) >= sweep.num_samples
    if not complete:
        log(f"\nthe sweep stopped before its end ({interrupted} trials interrupted, {len(run_statuses)} of "
            f"{sweep.num_samples} started): rerun it with resume=true name={run.name}")
    statuses = {status: sum(s == status for s in run_statuses.values())
                for status in ("finished", "pruned", "failed", "interrupted")}
    summary = {"out_dir": str(run.out_dir), "trials": len(run_statuses), "finished": len(finished),
               "statuses": statuses, "complete": complete, "results": str(files[0]), "tracking_uri": uri,
               "parent_run_id": parent,
               "training_seconds": sum(r.get("stage_seconds", 0.0) for r in table),
               "stage_epochs": sum(int(r.get("optim.epochs", 0)) for r in table)}
    if finished:
        summary.update(report_best(run, finished, table, log))
    else:
        log("\nno trial finished all stages")
    if sweep.variant == "all":
        summary["best_per_variant"] = best_per_variant(table, num_stages)
        log("\nbest finished trial per variant:\n" + format_table(summary["best_per_variant"], VARIANT_COLUMNS))
    tracking.log_parent_files(uri, parent, files)
    log(f"\nresults: {files[0]}")
    log(ui_command(uri, run.target.experiment_id))
    return summary, table, run_statuses


def tune_statuses(grid: ResultGrid, num_stages: int) -> dict[str, str]:
    """What Tune's results say, for runs the callback did not end (a sweep resumed after a crash)."""
    statuses = {}
    for result in grid:
        metrics = result.metrics or {}
        if "trial_id" not in metrics:  # Tune adds it to every result; a trial that never reported has none
            continue
        if result.error:
            statuses[metrics["trial_id"]] = "failed"
        elif metrics.get("stages_done", 0) >= num_stages:
            statuses[metrics["trial_id"]] = "finished"
    return statuses


def close_runs(uri: str, run_statuses: dict[str, str]) -> None:
    for run_id, status in run_statuses.items():
        if status == "interrupted":  # stopped with the sweep, not by ASHA: honest KILLED until resume=true
            tracking.set_status(uri, run_id, "KILLED", {"slora.status": "interrupted"})
        else:  # a no-op for the runs Tune's callback ended (callback.py)
            end_trial(uri, run_id, status)


def report_best(run: SweepRun, finished: list[dict], table: list[dict], log) -> dict:
    """The best finished trial, selected on validation and reported on test, its config and stages, the registered
    model and the Pareto front; -> what the summary records of them."""
    sweep, out = run.sweep, {}
    best = max(finished, key=lambda r: r["val_accuracy"])
    out["best"] = dict(best)
    log(f"\nbest finished trial {best['trial']} (MLflow run {best['run_id']}), selected on validation: "
        f"val accuracy {_score(best, 'val_accuracy')}; its test accuracy {_score(best, 'test_accuracy')}, "
        f"test AAA {_score(best, 'test_average_incremental_accuracy')}, "
        f"test forgetting {_score(best, 'test_forgetting')}")
    searched = [p.key for p in run.params if p.kind != "value" and p.applies_to(best)]
    if "variant" not in searched:  # fixed by the variant's own space, still worth naming
        searched.append("variant")
    log("config: " + ", ".join(f"{k}={best[k]}" for k in searched if k in best))
    log(stage_table([r for r in table if r["run_id"] == best["run_id"]]))
    if sweep.save_merged != "none":
        version = register(sweep, run.name, best, run.uri, run.num_stages)
        out["registered_model"] = f"models:/{sweep.registered_model}/{version}"
        log(f"registered {out['registered_model']} (alias champion)")
    if sweep.objective == "pareto":
        out["pareto_front"] = pareto_front(finished)
        log("\nPareto front (max val accuracy, min stored parameters; test accuracy alongside):")
        for r in out["pareto_front"]:
            log(f"  {r['trial']}: val accuracy {r['val_accuracy']:.2%}, test accuracy {r['test_accuracy']:.2%}, "
                f"stored parameters {int(r['stored_parameters']):,}")
    return out


def ui_command(uri: str, experiment_id: str) -> str:
    backend = f" --backend-store-uri {uri}" if not uri.startswith("http") else ""
    # the link opens the runs view: MLflow 3's UI otherwise opens every experiment on its GenAI overview
    runs_view = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return (f"MLflow UI: mlflow ui{backend} --port 5000   (then open http://127.0.0.1:5000/{runs_view})"
            if backend else f"MLflow UI: {uri.rstrip('/')}/{runs_view}")


REGISTERED_SCORES = ("val_accuracy", "test_accuracy", "test_average_incremental_accuracy", "test_forgetting")


def registered_scores(best: dict) -> tuple[dict, dict]:
    """-> (the registered model's own final scores, the trial's means over its seeds or {}). With seeds_per_trial
    > 1 a trial's scores are means, while the merged model it logs is seed 0's: its own scores are seed 0's."""
    own = {k: best.get(f"seed0_{k}") for k in REGISTERED_SCORES}
    if any(v is None or v != v for v in own.values()):  # one seed: the trial's scores are the model's
        return {k: best[k] for k in REGISTERED_SCORES}, {}
    return own, {k: best[k] for k in REGISTERED_SCORES}


def register(sweep, name: str, best: dict, uri: str, num_stages: int) -> str:
    """The best trial's last merged model in the registry, described and tagged so it reads without its run."""
    scores, means = registered_scores(best)
    tags = {"method": best["variant"], "benchmark": best["data.benchmark"], "backbone": best["backbone.name"],
            "sweep": name, "stages": num_stages, **{f"final_{k}": f"{v:.4f}" for k, v in scores.items()},
            **{f"mean_over_seeds_final_{k}": f"{v:.4f}" for k, v in means.items()}}
    description = (f"{best['variant']} on {best['data.benchmark']} ({best['backbone.name']}, {num_stages} tasks): the "
                   f"best finished trial of sweep {name} on validation accuracy; this model"
                   f"{' (seed 0 of the trial)' if means else ''}: val accuracy {scores['val_accuracy']:.2%}, "
                   f"test accuracy {scores['test_accuracy']:.2%}, "
                   f"AAA {scores['test_average_incremental_accuracy']:.2%}, "
                   f"forgetting {scores['test_forgetting']:.2%}"
                   + (f"; the trial's mean over its seeds, on which it was selected: val accuracy "
                      f"{means['val_accuracy']:.2%}, test accuracy {means['test_accuracy']:.2%}" if means else "")
                   + f". Trial {best['trial']}, run {best['run_id']}.")
    shape = tuple(int(x) for x in str(best["data.image_shape"]).split(","))
    return tracking.register_best(uri, best["run_id"], num_stages, sweep.registered_model, description, tags, shape,
                                  int(best["data.num_classes"]))
