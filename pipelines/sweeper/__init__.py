"""The sweep platform behind pipelines/sweep.py, one job per module.

options   the sweep's own keys, split from the run keys and the search space's, checked before Ray starts
preflight the base config, the space, the data and the backbone checked once, before any trial
tuner     Ray Tune: Optuna TPE over the space, ASHA by stage, the local or remote Ray cluster
trial     a trial's driver: its config resolved once, then a Ray Train TorchTrainer
worker    the stage loop of one Train worker (DDP rank): restore, train, log, report, checkpoint
tracking  MLflow: the parent run, one child run per trial, per-stage metrics, the registered model
results   the trials x stages table from MLflow, as Parquet and CSV; Pareto front; best per variant
summary   the end of a sweep: statuses, the best trial selected on validation, the registered model
searcher  Optuna told the truth about trials ASHA stopped
"""
