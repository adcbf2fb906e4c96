"""The Tune callback that ends each trial's MLflow run as Tune ends the trial (endings.py says why here). Its own
module: it imports Ray, which the sweep's entry point loads only once the input is checked."""

from __future__ import annotations

from ray.tune import Callback

from . import tracking
from .endings import end_trial


class TrialEndings(Callback):
    """Ends each trial's MLflow run as Tune ends the trial."""

    def __init__(self, target: tracking.TrackingTarget, num_stages: int):
        self.target, self.num_stages = target, num_stages

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial.trial_id)
        if run_id:
            # the stages Tune saw reported: a stopped trial's worker may still log the next one before it dies
            done = int((trial.last_result or {}).get("stages_done", 0))
            status = "finished" if done >= self.num_stages else "pruned"
            end_trial(self.target.tracking_uri, run_id, status, stages_done=done)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial.trial_id)
        if run_id:
            error = trial.get_error()
            end_trial(self.target.tracking_uri, run_id, "failed", f"{type(error).__name__}: {error}")

    def _run_id(self, trial_id: str) -> str:
        return tracking.find_child_run(self.target, trial_id)
