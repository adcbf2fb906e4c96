"""The Hydra composition: precedence, config groups, the alias layer, --cfg job, and a run resumed at a stage."""

from __future__ import annotations

import json

import pytest
import yaml

from slora.config import RunConfig
from slora.configure import ConfigError, compose_run, from_dict, to_dict


def test_precedence_is_defaults_then_benchmark_then_semantics_then_command_line():
    assert compose_run([]).optim.optimizer == "adam"  # digits' preset over the dataclass's sgd
    bench = compose_run(["benchmark=cifar100"])
    assert (bench.optim.optimizer, bench.optim.lr_head, bench.backbone.embed_dim) == ("sgd", 8e-3, 0)
    paper = compose_run(["benchmark=cifar100", "semantics=paper"])
    assert (paper.optim.optimizer, paper.optim.lr_head, paper.optim.epochs) == ("adam", 8e-3, 20)  # epochs: benchmark
    assert paper.adapter.rank_schedule == [[3, 8], [7, 6]] and paper.adapter.normaliser == "product_norm"
    mine = compose_run(["lr_head=0.1", "semantics=paper", "benchmark=cifar100", "normaliser=factor_norms"])
    assert (mine.optim.lr_head, mine.optim.lr_direction, mine.adapter.normaliser) == (0.1, 8e-3, "factor_norms")


def test_alias_layer_takes_plain_strings_lists_and_backbone_names():
    cfg = compose_run(["variant=slora_rr", "classes=n01,n02", "data_root=../some dir/x", "targets=q,k,v",
                       "rank_schedule=((1,4),(2,2))",
                       "backbone=vit_small_patch16_224", "embed_dim=32", "data.benchmark=tinyimagenet"])
    assert cfg.data.classes == "n01,n02" and cfg.data.data_root == "../some dir/x"
    assert cfg.adapter.targets == ["q", "k", "v"] and cfg.adapter.rank_schedule == [[1, 4], [2, 2]]
    assert cfg.backbone.name == "vit_small_patch16_224" and (cfg.backbone.embed_dim, cfg.backbone.depth) == (32, 0)
    assert cfg.data.benchmark == "tinyimagenet" and cfg.optim.batch_size == 32  # data.benchmark= picks the preset too
    typed = compose_run({"rank": 6, "carry_magnitudes": True, "milestones": [2, 3], "variant": "slora_rr"})
    assert (typed.adapter.rank, typed.adapter.carry_magnitudes, typed.optim.milestones) == (6, True, [2, 3])


@pytest.mark.parametrize("args, names", [
    (["variant=slora_xx"], ["slora_xx", "valid variants", "slora_pp"]),
    (["save_merged=some"], ["save_merged='some'", "every, last, none"]),
    (["carry_magnitudes=maybe"], ["adapter.carry_magnitudes", "maybe"]),
    (["resume=true"], ["resume=true", "out_dir="]),
])
def test_hydra_and_omegaconf_errors_become_one_line_naming_the_value(args, names):
    with pytest.raises(ConfigError) as caught:
        compose_run(args)
    assert "\n" not in str(caught.value) and all(name in str(caught.value) for name in names), str(caught.value)


def test_a_saved_config_comes_back_exactly(tmp_path):
    cfg = compose_run(["benchmark=imagenet_a", "semantics=paper", "rank=4"])
    saved = json.loads(json.dumps(to_dict(cfg)))
    assert from_dict(RunConfig, saved) == cfg


def test_cfg_job_prints_the_composed_config_and_runs_nothing(tmp_path, capsys, monkeypatch):
    from pipelines.run import main

    monkeypatch.chdir(tmp_path)
    assert main(["benchmark=cifar100", "semantics=paper", "rank=7", "--cfg", "job"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["adapter"]["rank"] == 7 and shown["optim"]["optimizer"] == "adam"
    assert shown["data"]["benchmark"] == "cifar100" and shown["semantics"] == "paper"
    assert list(tmp_path.iterdir()) == []  # no outputs/ folder, no run
    from pipelines.sweep import main as sweep

    assert sweep(["variant=slora_pp", "benchmark=cifar100", "--cfg", "job"]) == 0
    base = yaml.safe_load(capsys.readouterr().out)  # what every trial starts from: the sweep's validation split too
    assert base["variant"] == "slora_pp" and base["data"]["val_fraction"] == 0.1 and base["optim"]["lr_head"] == 8e-3
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_run_resumes_after_its_last_stage_with_the_same_numbers(tmp_path):
    from slora.checkpoint import CHECKPOINT_FILE, save_checkpoint
    from slora.runner import run_continual, start_run

    common = ["variant=slora_kd", "num_tasks=3", "epochs=1", "max_train_per_class=10", "progress=false",
              "save_merged=none", "device=cpu"]
    whole = run_continual(compose_run([*common, f"out_dir={tmp_path / 'whole'}"]), log=lambda *_: None)
    interrupted = compose_run([*common, f"out_dir={tmp_path / 'cut'}"])
    run = start_run(interrupted)
    run.run_stage()  # then the machine goes away
    (tmp_path / "cut").mkdir()
    save_checkpoint([run], tmp_path / "cut" / CHECKPOINT_FILE)
    logged = []
    resumed = run_continual(compose_run([*common, f"out_dir={tmp_path / 'cut'}", "resume=true"]), log=logged.append)
    assert "resuming after stage 1" in logged[0]
    for results in (whole, resumed):
        for stage in results["stages"]:
            stage.pop("stage_seconds")
    same = [json.dumps([r["stages"], r["test_accuracy_matrix"]]) for r in (resumed, whole)]  # NaN == NaN as text
    assert same[0] == same[1]
    with pytest.raises(ConfigError, match="optim"):  # a checkpoint of other settings is refused, naming them
        run_continual(compose_run([*common, f"out_dir={tmp_path / 'cut'}", "resume=true", "epochs=2"]))
    with pytest.raises(ConfigError, match="no checkpoint.safetensors"):
        run_continual(compose_run([*common, f"out_dir={tmp_path / 'none'}", "resume=true"]))


def test_hydra_prefixes_add_override_and_delete_as_in_hydra():
    assert compose_run(["++rank=4"]).adapter.rank == 4  # add or override: every key exists, so an override
    with pytest.raises(ConfigError, match=r"\+rank=4: could not append to config, an item is already at adapter.rank"):
        compose_run(["+rank=4"])
    with pytest.raises(ConfigError, match="unknown config key 'foo'"):
        compose_run(["+foo=1"])
    assert compose_run(["variant=inflora"]).optim.optimizer == "adam"  # its preset's
    assert compose_run(["variant=inflora", "~optimizer"]).optim.optimizer == "sgd"  # deleted: the schema default
    assert compose_run(["variant=inflora", "~optim.optimizer=adam"]).optim.optimizer == "sgd"
    with pytest.raises(ConfigError, match="optim.optimizer is adam here, not sgd"):
        compose_run(["variant=inflora", "~optimizer=sgd"])  # Hydra deletes ~key=v only where the value is v
    with pytest.raises(ConfigError, match="the semantics group always has one preset"):
        compose_run(["~semantics"])
