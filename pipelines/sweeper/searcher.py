"""OptunaSearch that tells Optuna the truth about trials ASHA stopped early.

Ray's OptunaSearch reports an ASHA-stopped trial as COMPLETE with its last (early-stage) value. Early-stage
accuracy in class-incremental learning is inflated (fewer classes), so TPE would chase it, and a trial stopped
after stage 1 could sit on a Pareto front (docs/platform.md §6). Here such trials are PRUNED.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class StageAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_t = max_t

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        finished = bool(result) and result.get("stages_done", 0) >= self.max_t
        # result=None makes the parent tell Optuna FAIL (error) or PRUNED (stopped early)
        super().on_trial_complete(trial_id, result if finished and not error else None, error)
