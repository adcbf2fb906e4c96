"""Each method's defining property on a tiny ViT, through the Learner interface the stage loop drives."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from slora.configure import ConfigError, compose_run, keys_read
from slora.learner import Task
from slora.learners import LEARNERS, build_learner
from slora.training import build_optimizer
from tiny import CLASSES_PER_TASK, OPTIM, images, tiny_vit

EVAL = images(6, seed=9)
METHODS = pytest.mark.parametrize("name", sorted(LEARNERS))  # every registered method, as timm tests list_models()
PROMPTS = ("coda_prompt", "l2p", "dualprompt")  # two forward passes: exported in their own format, not as a plain ViT


def task_data(index: int, n: int = 8, seed: int = 3):
    """A task's images (random, fixed by the seed) and labels of its CLASSES_PER_TASK new classes."""
    x = images(n, seed=seed + index)
    y = index * CLASSES_PER_TASK + torch.arange(n) % CLASSES_PER_TASK
    return Task(index=index, num_new_classes=CLASSES_PER_TASK, known=index * CLASSES_PER_TASK,
                data=lambda: iter([(x[:5], y[:5]), (x[5:], y[5:])]), num_tasks=2), x, y


def train_steps(learner, task: Task, x: torch.Tensor, y: torch.Tensor, steps: int = 3) -> None:
    """A fresh optimiser (as each stage builds one) and a few steps on the task's images."""
    optimizer, _ = build_optimizer(learner, OPTIM, epochs=1)
    learner.train()
    for _ in range(steps):
        loss = learner.loss(learner(x), y, task.known)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def small_config(name: str):
    """The method's config with rank 2 and seq_ft's backbone rate 1e-3, where the method reads them."""
    return compose_run({**keys_read({"rank": 2, "optim.lr_backbone": 1e-3}, name)[0], "variant": name})


def run_learner(name: str, tasks: int = 2, steps: int = 2):
    """``tasks`` tasks of the stage loop in miniature: begin_task, a few steps when the method trains, end_task."""
    learner = build_learner(small_config(name), tiny_vit())
    merged = as_trained = None
    for index in range(tasks):
        torch.manual_seed(index)
        task, x, y = task_data(index)
        learner.begin_task(task)
        if learner.trains:
            train_steps(learner, task, x, y, steps)
        learner.eval()
        with torch.no_grad():
            as_trained = learner(EVAL)
        merged, _ = learner.end_task(task)
    return learner, merged, as_trained


@METHODS
def test_every_method_evaluates_all_seen_classes_without_a_task_id_as_a_plain_timm_vit(name):
    learner, merged, as_trained = run_learner(name)
    assert isinstance(merged, timm.models.VisionTransformer) != (name in PROMPTS)
    assert merged.num_classes == 2 * CLASSES_PER_TASK
    with torch.no_grad():  # the exported model is the learner as trained (S-LoRA: before its direction is stored;
        expected = as_trained if learner.trains else learner(EVAL)  # SimpleCIL: once end_task set its prototypes)
        assert torch.allclose(merged(EVAL), expected, atol=1e-5)


@METHODS
def test_a_learner_rebuilt_from_its_state_gives_the_same_logits(name):
    learner, _, _ = run_learner(name)
    fresh = build_learner(small_config(name), tiny_vit())
    fresh.load_learner_state(learner.learner_state())
    learner.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(EVAL), learner(EVAL), atol=1e-6)


def test_simplecil_prototypes_are_the_class_means_and_it_trains_nothing():
    learner, _, _ = run_learner("simplecil")
    assert not learner.trains and learner.stored_parameters() == 0
    backbone = tiny_vit().eval()  # the same pre-trained weights, untouched
    with torch.no_grad():
        for index in range(2):
            _, x, y = task_data(index)
            features = backbone(x)
            for c in y.unique():
                mean = features[y == c].mean(0)
                assert torch.allclose(learner.head.weight[c], F.normalize(mean, dim=0), atol=1e-5)
        # prediction = the most cosine-similar prototype, over every class seen
        cosine = F.normalize(backbone(EVAL), dim=1) @ learner.head.weight.T
        assert torch.equal(learner(EVAL).argmax(1), cosine.argmax(1))


@pytest.mark.parametrize("name, changes", [("seq_ft", True), ("slora", False), ("slora_pp", False),
                                           ("seq_lora", False), ("simplecil", False), ("inflora", False),
                                           ("coda_prompt", False), ("l2p", False), ("dualprompt", False)])
def test_only_full_fine_tuning_changes_the_backbone(name, changes):
    learner, _, _ = run_learner(name)
    pretrained = tiny_vit().state_dict()
    backbone = (learner.model.vit if hasattr(learner, "model") else learner.vit).state_dict()
    moved = [k for k, v in backbone.items() if not torch.equal(v, pretrained[k])]
    assert bool(moved) == changes, moved
    if changes:
        assert learner.stored_parameters() == sum(v.numel() for v in tiny_vit().parameters())


def test_a_method_key_given_to_another_method_names_its_owner():
    with pytest.raises(ConfigError) as caught:
        compose_run(["variant=slora", "lr_backbone=1e-2"])
    assert "seq_ft" in str(caught.value) and "variant=slora" in str(caught.value)
    assert compose_run(["variant=seq_ft", "lr_backbone=1e-3"]).optim.lr_backbone == 1e-3


def test_every_registered_method_has_a_search_space():
    from search_spaces import available_spaces

    assert set(LEARNERS) - {"joint"} <= set(available_spaces())


def features(learner, x: torch.Tensor) -> torch.Tensor:
    from torch.func import functional_call

    with torch.no_grad():
        return functional_call(learner.vit, learner.adapted_qkv_weights(), (x,), strict=False)


@pytest.mark.parametrize("threshold, kept", [(1 - 1e-9, True), (0.05, False)])
def test_inflora_leaves_old_inputs_untouched_when_their_subspace_is_kept(threshold, kept):
    """One task-0 image spans a 5-dimensional input space per block (5 tokens); keeping all its energy in DualGPM,
    task 1's designed down factors annihilate it, so however task 1 trains, task 0's features do not move. Keeping
    one direction (threshold 0.05), they do."""
    cfg = compose_run({"variant": "inflora", "rank": 2, "inflora.threshold_begin": threshold,
                       "inflora.threshold_end": threshold})
    learner = build_learner(cfg, tiny_vit())
    old, new = images(1, seed=5), images(8, seed=6)
    for index, (x, y) in enumerate([(old, torch.tensor([0])), (new, 2 + torch.arange(8) % 2)]):
        task = Task(index=index, num_new_classes=2, known=2 * index, data=lambda x=x, y=y: iter([(x, y)]), num_tasks=2)
        learner.begin_task(task)
        if index == 1:
            before = features(learner, old)
            optimizer = torch.optim.Adam([p for g in learner.param_groups(OPTIM) for p in g["params"]], lr=0.1)
            for _ in range(5):
                loss = learner.loss(learner(new), y, task.known)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            assert learner.up_k[0].abs().max() > 0.1  # task 1 did train
        learner.end_task(task)
    moved = (features(learner, old) - before).abs().max() / before.abs().max()
    assert (moved < 1e-4) == kept, float(moved)


def test_coda_prompt_freezes_earlier_components_keys_and_attention_in_a_later_task():
    cfg = compose_run({"variant": "coda_prompt", "coda_prompt.pool_size": 4, "coda_prompt.length": 2})
    learner = build_learner(cfg, tiny_vit())
    for index in range(2):
        task, x, y = task_data(index)
        learner.begin_task(task)
        if index == 1:
            old = {n: getattr(learner, f"{n}_0")[:2].detach().clone() for n in ("p", "k", "a")}
            new = {n: getattr(learner, f"{n}_0")[2:].detach().clone() for n in ("p", "k", "a")}
            flat = getattr(learner, "p_0").detach().reshape(4, -1)  # new components start orthogonal to old ones
            assert (flat[2:] @ flat[:2].T).abs().max() < 1e-4
            train_steps(learner, task, x, y)
        learner.end_task(task)
    for n in ("p", "k", "a"):
        assert torch.equal(getattr(learner, f"{n}_0")[:2], old[n]), n  # task 0's components did not move
        assert not torch.equal(getattr(learner, f"{n}_0")[2:], new[n]), n  # task 1's trained


def test_l2p_prefixes_are_the_prompts_whose_keys_best_match_the_query():
    learner = build_learner(compose_run({"variant": "l2p", "l2p.pool_size": 6, "l2p.top_k": 2, "l2p.length": 2}),
                            tiny_vit()).eval()
    query = torch.randn(3, learner.dim)
    with torch.no_grad():
        learner.keys.copy_(torch.randn(6, learner.dim))
        learner.keys[4] = 5 * query[0]  # prompt 4's key is image 0's query itself: the best match
        chosen, _ = learner.select(query)
        cosine = F.normalize(query, dim=1) @ F.normalize(learner.keys, dim=1).T
        assert chosen[0, 0] == 4 and torch.equal(chosen.sort(1).values, cosine.topk(2, 1).indices.sort(1).values)
        prefix_k, _ = learner.prefixes(query)[0]
        assert torch.equal(prefix_k[0, :1], learner.prompts[4, :1])  # its first half leads image 0's prefix keys


def test_dualprompt_trains_the_tasks_own_e_prompt_and_evaluates_with_the_best_matching_key():
    deeper = timm.create_model("vit_tiny_patch16_224", img_size=8, patch_size=4, in_chans=1, embed_dim=24, depth=4,
                               num_heads=2, num_classes=0)  # G-prompts in blocks 0-1, E-prompts from block 2
    learner = build_learner(compose_run({"variant": "dualprompt", "dualprompt.length": 2, "dualprompt.g_length": 2}),
                            deeper)
    assert learner.e_layers == (2, 3)
    e_prompts = {n: p for n, p in learner.named_parameters() if n.startswith(("e_", "k_"))}
    for index in range(2):
        task, x, y = task_data(index)
        learner.begin_task(task)
        before = {n: p.detach().clone() for n, p in learner.named_parameters()}
        train_steps(learner, task, x, y)
        for name, param in e_prompts.items():  # only this task's E-prompt and key move; the G-prompts always do
            assert torch.equal(param[:index], before[name][:index])
            assert not torch.equal(param[index], before[name][index])
            assert torch.equal(param[index + 1:], before[name][index + 1:]), name
        assert not torch.equal(learner.g_0, before["g_0"])
    learner.eval()
    query = torch.randn(3, learner.dim)
    with torch.no_grad():
        learner.k_3[1] = 5 * query[0]  # task 1's key in block 3 is image 0's query itself
        learner.k_3[0] = 5 * query[1]
        learner.k_3[2] = 5 * query[2]  # an unseen task's key is never matched
        prefix_k, prefix_v = learner.prefixes(query)[3]
        assert torch.equal(prefix_k[0], learner.e_3[1, :1]) and torch.equal(prefix_v[1], learner.e_3[0, 1:])
        assert learner.select(query, 3)[0].tolist()[:2] == [1, 0] and int(learner.select(query, 3)[0][2]) < 2


def test_dualprompt_refuses_more_tasks_than_e_prompts():
    learner = build_learner(compose_run({"variant": "dualprompt", "dualprompt.pool_size": 1}), tiny_vit())
    learner.begin_task(task_data(0)[0])
    with pytest.raises(ValueError, match="dualprompt.pool_size=1"):
        learner.begin_task(task_data(1)[0])


def test_a_prompt_method_exports_what_it_evaluates_and_loads_back(tmp_path):
    from slora.learners import load_exported
    from slora.runner import run_continual

    cfg = compose_run(["variant=coda_prompt", "num_tasks=2", "epochs=1", "max_train_per_class=6", "progress=false",
                       "save_merged=last", f"out_dir={tmp_path / 'run'}", "device=cpu", "coda_prompt.pool_size=4"])
    results = run_continual(cfg, log=lambda *_: None)
    exported = load_exported(tmp_path / "run" / "merged" / "stage_02")
    from slora.data import load_benchmark
    from slora.continual import EVAL_BATCH
    from slora.data.batches import eval_batches
    from slora.metrics import accuracy
    from slora.training import predict

    bench = load_benchmark(cfg.data)
    seen = bench.test_labels < exported.num_classes
    batches = (x - 0.0 for x in eval_batches(bench.test_images[seen], EVAL_BATCH, "cpu"))  # unit scaling: as fed
    assert accuracy(predict(exported, batches), bench.test_labels[seen]) == results["final_test_accuracy"]
