"""How a trial ends in MLflow: finished, pruned (stopped by ASHA at a stage boundary) or failed, with its final
scores, decided in the sweep's own process the moment Tune ends the trial.

A trial driver cannot tell these apart: when ASHA stops a trial, Tune kills its actors and the driver sees the same
ActorDiedError a crashed worker gives. Tune's controller knows (on_trial_complete vs on_trial_error), so the run's
status and tags are set here: a pruned trial ends FINISHED with slora.status=pruned and never carries an error.
"""

from __future__ import annotations

from slora.config import SPLITS

from . import tracking

FINAL_SCORES = ("accuracy", "average_incremental_accuracy", "forgetting")
MLFLOW_STATUS = {"finished": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}


def final_metrics(stages: dict[int, dict[str, float]], last: int | None = None,
                  completed: bool = True) -> dict[str, float]:
    """The scores of stage `last` (default: the last logged) and stages_done. A trial that completed the sequence
    gets them as final_val_* / final_test_*; one stopped before (by ASHA or a failure) as stopped_val_* /
    stopped_test_*, so sorting the runs table on final_val_accuracy ranks completed trials only: an early stage's
    accuracy is over fewer, easier classes (near 100% on a 2-class first stage) and would sit above the pick."""
    last = max(stages, default=0) if last is None else last
    if last not in stages:
        return {"stages_done": last}
    prefix = "final" if completed else "stopped"
    scores = {f"{prefix}_{split}_{s}": stages[last][f"{split}_{s}"] for split in SPLITS for s in FINAL_SCORES
              if f"{split}_{s}" in stages[last]}
    return {"stages_done": last, **scores}


def end_trial(uri: str, run_id: str, status: str, error: str = "", stages_done: int | None = None) -> None:
    """Final metrics, status tags and the MLflow status of one trial's run; idempotent (a run already ended so is
    left as it is). stages_done: the stages Tune counted, when it stopped the trial (a stopped trial's worker may
    log one more stage before it is killed); default: the stages MLflow holds."""
    c = tracking.client(uri)
    run = c.get_run(run_id)
    if run.info.status == MLFLOW_STATUS[status] and run.data.tags.get("slora.status") == status:
        return
    metrics = final_metrics(tracking.metric_histories(uri, run_id), stages_done, completed=status == "finished")
    tracking.log_metrics(uri, run_id, metrics, step=int(metrics["stages_done"]))
    tags = {"slora.status": status}
    if status == "pruned":
        tags["slora.stopped_at_stage"] = str(int(metrics["stages_done"]))
    if error:
        tags["slora.error"] = error[:5000]
    tracking.set_status(uri, run_id, MLFLOW_STATUS[status], tags)
