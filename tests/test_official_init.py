"""Each method starts and pulls as its authors' code does: head rows, CODA-Prompt's Gram-Schmidt, the key-pull terms."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from slora.configure import compose_run, keys_read
from slora.learner import Task
from slora.learners import LEARNERS, build_learner
from slora.learners.coda_prompt import gram_schmidt
from tiny import images, tiny_vit

NEW = 600  # new classes in one task: enough head numbers for a 5% check of a standard deviation
# the rule each method's official code uses for new classifier rows (slora/heads.py names the files): nn.Linear's
# default for InfLoRA's and CODA-Prompt's code, SD-LoRA's / PILOT's SimpleLinear for every other registered method
NN_LINEAR = ("inflora", "coda_prompt", "l2p", "dualprompt")
OFFICIAL_HEAD = {name: "nn_linear" if name in NN_LINEAR else "simple_linear" for name in LEARNERS}


def head_of(learner) -> torch.nn.Linear:
    return learner.head if hasattr(learner, "head") else learner.model.head  # S-LoRA's lives in its SLoRAViT


@pytest.mark.parametrize("name", sorted(OFFICIAL_HEAD))
def test_new_head_rows_have_the_official_statistics(name):
    torch.manual_seed(0)
    learner = build_learner(compose_run({**keys_read({"rank": 2}, name)[0], "variant": name}), tiny_vit())
    x = images(8)
    task = Task(index=0, num_new_classes=NEW, known=0, data=lambda: iter([(x, torch.arange(8))]), num_tasks=2)
    learner.begin_task(task)
    head = head_of(learner)
    d = head.in_features
    weight, bias = head.weight.detach(), head.bias.detach()
    assert weight.shape == (NEW, d)
    if OFFICIAL_HEAD[name] == "simple_linear":  # kaiming_uniform(nonlinearity='linear'): U(+-sqrt(3/d)), bias 0
        expected_std, bound = 1 / math.sqrt(d), math.sqrt(3 / d)
        assert torch.count_nonzero(bias) == 0
    else:  # nn.Linear's default: weight and bias U(+-1/sqrt(d))
        expected_std, bound = 1 / math.sqrt(3 * d), 1 / math.sqrt(d)
        assert bias.abs().max() <= bound and abs(float(bias.std()) / expected_std - 1) < 0.1
    assert weight.abs().max() <= bound
    assert abs(float(weight.std()) / expected_std - 1) < 0.05, (name, float(weight.std()), expected_std)


def test_coda_prompts_new_components_follow_the_classical_gram_schmidt_of_the_official_code():
    torch.manual_seed(0)
    old = torch.randn(3, 50)
    old[1] += 0.8 * old[0]  # trained components drift away from orthogonality
    torch.manual_seed(1)
    new = gram_schmidt(old, torch.Size((2, 50)))
    torch.manual_seed(1)
    draws = [torch.randn(50) for _ in range(2)]  # one draw per row, as the rows are made

    def remove(v, basis):  # classical: every projection is of the same draw
        return v - sum((v @ u) / (u @ u) * u for u in basis)

    first = remove(draws[0], old)
    second = remove(draws[1], [*old, first])
    assert torch.allclose(new, F.normalize(torch.stack([first, second]), dim=1), atol=1e-6)
    modified = draws[0].clone()
    for u in old:  # the modified form projects the running remainder: another vector when old rows are not orthogonal
        modified = modified - (modified @ u) / (u @ u) * u
    assert (F.normalize(modified, dim=0) - new[0]).abs().max() > 1e-3


def _training_prefixes(name: str, keys: dict, vit=None):
    """A prompt learner in its first task, training, after one forward of its prompts on random queries."""
    learner = build_learner(compose_run({"variant": name, **keys}), vit or tiny_vit())
    x = images(8)
    learner.begin_task(Task(index=0, num_new_classes=2, known=0, data=lambda: iter([(x, torch.arange(8) % 2)]),
                            num_tasks=2))
    learner.train()
    query = torch.randn(5, learner.dim)
    learner.prefixes(query)
    return learner, query


def test_l2p_pull_term_sums_the_official_batch_by_batch_index():
    learner, query = _training_prefixes("l2p", {"l2p.pool_size": 6, "l2p.top_k": 2, "l2p.pull_coefficient": 0.5})
    cosine = F.normalize(query, dim=1) @ F.normalize(learner.keys, dim=1).T
    chosen = cosine.topk(2, dim=1).indices
    # every image's query against the keys chosen for every image of the batch: B * B * k terms
    expected = sum(1 - cosine[b, chosen[c, j]] for b in range(5) for c in range(5) for j in range(2))
    assert torch.allclose(learner.extra_loss, 0.5 * expected, atol=1e-5)


def test_dualprompt_pull_term_sums_over_the_batch_and_the_e_blocks():
    deeper = timm.create_model("vit_tiny_patch16_224", img_size=8, patch_size=4, in_chans=1, embed_dim=24, depth=4,
                               num_heads=2, num_classes=0)
    learner, query = _training_prefixes("dualprompt", {"dualprompt.length": 2, "dualprompt.g_length": 2}, deeper)
    expected = sum((1 - F.normalize(query, dim=1) @ F.normalize(getattr(learner, f"k_{layer}")[0], dim=0)).sum()
                   for layer in learner.e_layers)
    assert torch.allclose(learner.extra_loss, expected, atol=1e-5)
