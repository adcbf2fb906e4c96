"""The S-LoRA adapter as a matrix over every variant, like PEFT's tuner tests: what a task boundary, a training
step, a freeze, an absorption and a merge may and may not change."""

from __future__ import annotations

import pytest
import torch
import yaml

from slora.learners.slora.adapter import direction_norm
from slora.learners.slora.compute import cheaper_compute
from slora.config import AdapterConfig
from slora.configure import CONF_DIR
from slora.learners.slora import SLoRAViT
from slora.learners.slora import SLORA_VARIANTS
from tiny import (
    ALL_VARIANTS,
    CLASSES_PER_TASK,
    DECOUPLED_VARIANTS,
    images,
    logits,
    make_model,
    randomise_current,
    run_tasks,
    tiny_vit,
    train_steps,
)

# The paper's reading of every switch that decides whether the function is preserved at a task boundary.
PAPER_ADAPTER = yaml.safe_load((CONF_DIR / "semantics" / "paper.yaml").read_text())["adapter"]
FUNCTION_PRESERVING = {
    "paper": PAPER_ADAPTER,
    "carried_raw_current": {"carry_magnitudes": True, "normalise_current": False},
    "carried_raw_current_product_norm": {"carry_magnitudes": True, "normaliser": "product_norm"},
}


def snapshot(tensors) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in tensors}


def frozen_buffers(model: SLoRAViT) -> dict[str, torch.Tensor]:
    return snapshot((n, b) for n, b in model.named_buffers() if "frozen_" in n)


# -- the start of a task ----------------------------------------------------------------------------------------
@ALL_VARIANTS
def test_new_up_factor_starts_at_zero(variant):
    model = make_model(variant)
    model.begin_task(CLASSES_PER_TASK, 4)
    for layer in model.directions.values():
        for t in layer.targets:
            assert torch.count_nonzero(layer.up(t)) == 0
            assert torch.count_nonzero(layer.down(t)) > 0


@ALL_VARIANTS
def test_begin_task_keeps_old_logits_when_magnitudes_carry(variant):
    model = make_model(variant, carry_magnitudes=True)
    run_tasks(model, variant, tasks=1)
    before = logits(model)
    model.begin_task(CLASSES_PER_TASK, 4)
    after = logits(model)
    assert after.shape[1] == before.shape[1] + CLASSES_PER_TASK
    torch.testing.assert_close(after[:, : before.shape[1]], before, rtol=0, atol=1e-6)


@DECOUPLED_VARIANTS
def test_new_direction_contributes_nothing_in_official_mode(variant):
    """Official mode resets the old magnitudes (a deliberate jump, docs/method.md §4), but the new direction adds 0."""
    model = make_model(variant)
    run_tasks(model, variant, tasks=1)
    model.begin_task(CLASSES_PER_TASK, 4)
    with_new = logits(model)
    for layer in model.directions.values():
        layer.drop_current()
    torch.testing.assert_close(logits(model), with_new, rtol=0, atol=0)


@DECOUPLED_VARIANTS
def test_official_mode_restarts_every_magnitude(variant):
    model = make_model(variant, magnitude_init=0.8)
    run_tasks(model, variant, tasks=2)
    model.begin_task(CLASSES_PER_TASK, 4)
    assert torch.equal(model.magnitudes.detach(), torch.full((model.kept_directions + 1,), 0.8))


# -- one training step --------------------------------------------------------------------------------------------
def trained_second_task(variant) -> tuple[SLoRAViT, dict[str, dict[str, torch.Tensor]]]:
    """A model one task in, then a begin_task and two steps; with snapshots taken right before those steps."""
    model = make_model(variant)
    run_tasks(model, variant, tasks=1)
    model.begin_task(CLASSES_PER_TASK, 4)
    before = {
        "backbone": snapshot(model.vit.state_dict().items()),
        "frozen": frozen_buffers(model),
        "current": snapshot(model.directions.named_parameters()),
        "magnitudes": {"m": model.magnitudes.detach().clone()},
        "head": {"weight": model.head.weight.detach().clone(), "bias": model.head.bias.detach().clone()},
    }
    # Two steps: at the first U = 0, so V and the new magnitude get no gradient yet.
    train_steps(model, steps=2)
    return model, before


@ALL_VARIANTS
def test_training_leaves_backbone_bit_identical(variant):
    model, before = trained_second_task(variant)
    for name, value in model.vit.state_dict().items():
        assert torch.equal(value, before["backbone"][name]), name


@ALL_VARIANTS
def test_training_leaves_frozen_directions_bit_identical(variant):
    model, before = trained_second_task(variant)
    after = frozen_buffers(model)
    assert after.keys() == before["frozen"].keys()
    for name, value in after.items():
        assert torch.equal(value, before["frozen"][name]), name


@ALL_VARIANTS
def test_training_changes_current_direction(variant):
    model, before = trained_second_task(variant)
    for name, value in model.directions.named_parameters():
        assert not torch.equal(value, before["current"][name]), name


@ALL_VARIANTS
def test_training_changes_magnitudes_only_when_trainable(variant):
    model, before = trained_second_task(variant)
    changed = model.magnitudes.detach() != before["magnitudes"]["m"]
    if variant.decoupled:
        assert changed.all(), model.magnitudes
    else:
        assert not changed.any() and not model.magnitudes.requires_grad


@ALL_VARIANTS
def test_training_changes_new_head_rows_only(variant):
    model, before = trained_second_task(variant)
    old = model.num_classes - CLASSES_PER_TASK
    weight, bias = model.head.weight.detach(), model.head.bias.detach()
    assert torch.equal(weight[:old], before["head"]["weight"][:old])
    assert torch.equal(bias[:old], before["head"]["bias"][:old])
    assert (weight[old:] != before["head"]["weight"][old:]).any(dim=1).all()


# -- normalisers -----------------------------------------------------------------------------------------------
def random_factors(rank: int = 3, dim: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim, rank, generator=generator), torch.randn(rank, dim, generator=generator)


def test_factor_norms_is_product_of_factor_frobenius_norms():
    up, down = random_factors()
    torch.testing.assert_close(direction_norm(up, down, "factor_norms"), up.norm() * down.norm())


def test_product_norm_is_frobenius_norm_of_product():
    up, down = random_factors()
    torch.testing.assert_close(direction_norm(up, down, "product_norm"), (up @ down).norm())


def test_direction_over_product_norm_has_unit_frobenius_norm():
    up, down = random_factors(seed=3)
    torch.testing.assert_close((up @ down / direction_norm(up, down, "product_norm")).norm(), torch.tensor(1.0))


@pytest.mark.parametrize("normaliser", ["factor_norms", "product_norm"])
def test_freeze_stores_each_projections_own_norm(normaliser):
    model = make_model("slora", normaliser=normaliser)
    model.begin_task(CLASSES_PER_TASK, 4)
    randomise_current(model)
    expected = {(n, t): direction_norm(layer.up(t), layer.down(t), normaliser).detach()
                for n, layer in model.directions.items() for t in layer.targets}
    model.freeze_current()
    for (n, t), norm in expected.items():
        torch.testing.assert_close(model.directions[n].frozen_norms(t), norm.reshape(1))


def test_stored_product_normalised_direction_has_unit_norm():
    model = make_model("slora", normaliser="product_norm")
    model.begin_task(CLASSES_PER_TASK, 4)
    randomise_current(model)
    model.freeze_current()
    for layer in model.directions.values():
        for t in layer.targets:
            stored = layer.frozen_up(t) @ layer.frozen_down(t) / layer.frozen_norms(t)
            torch.testing.assert_close(stored.norm(), torch.tensor(1.0))


def test_freezing_an_untrained_direction_keeps_the_model_finite():
    """U is still 0 (norm 0): storing it must not divide 0 by 0 into every later forward."""
    model = make_model("slora")
    model.begin_task(CLASSES_PER_TASK, 4)
    model.freeze_current()
    model.begin_task(CLASSES_PER_TASK, 4)
    assert torch.isfinite(logits(model)).all()


# -- RR: the rank schedule ----------------------------------------------------------------------------------------
def test_official_rank_schedule():
    ranks = [SLORA_VARIANTS["slora_rr"].rank_for_task(t, AdapterConfig()) for t in range(10)]
    assert ranks == [10] * 4 + [8] * 4 + [6] * 2


def test_paper_rank_schedule():
    adapter = AdapterConfig(rank_schedule=PAPER_ADAPTER["rank_schedule"])
    ranks = [SLORA_VARIANTS["slora_rr"].rank_for_task(t, adapter) for t in range(10)]
    assert ranks == [10] * 3 + [8] * 4 + [6] * 3


@pytest.mark.parametrize("name", [n for n, v in SLORA_VARIANTS.items() if not v.reduce_rank])
def test_variants_without_rr_keep_the_rank(name):
    assert {SLORA_VARIANTS[name].rank_for_task(t, AdapterConfig()) for t in range(12)} == {10}


def test_scheduled_rank_above_the_base_rank_is_capped():
    adapter = AdapterConfig(rank=4, rank_schedule=((1, 8), (2, 2)))
    assert [SLORA_VARIANTS["slora_rr"].rank_for_task(t, adapter) for t in range(3)] == [4, 4, 2]


@pytest.mark.parametrize("name", ["slora_rr", "slora_pp"])
def test_direction_shapes_follow_the_rank_schedule(name):
    variant = SLORA_VARIANTS[name]
    model = make_model(variant, rank=3, rank_schedule=((1, 2), (2, 1)), carry_magnitudes=True)
    for task in range(3):
        rank = variant.rank_for_task(task, model.cfg)
        model.begin_task(CLASSES_PER_TASK, rank)
        randomise_current(model, seed=task)  # independent random directions: KD keeps them all
        for layer in model.directions.values():
            assert layer.up("q").shape == (24, rank) and layer.down("v").shape == (rank, 24)
        if variant.absorb:
            assert not model.absorb_if_spanned()
        model.freeze_current()
    assert model.owner.tolist() == [0, 0, 0, 1, 1, 2]
    for layer in model.directions.values():
        assert layer.frozen_up("q").shape == (24, 6) and layer.frozen_down("v").shape == (6, 24)


# -- KD: absorption ---------------------------------------------------------------------------------------------
KD_MODES = {
    "normalised_factor_norms": {"normalise_current": True, "normaliser": "factor_norms"},
    "normalised_product_norm": {"normalise_current": True, "normaliser": "product_norm"},
    "paper": PAPER_ADAPTER,
    "carried_raw_current": {"carry_magnitudes": True},
}


def second_direction(mode: dict, spanned: bool) -> SLoRAViT:
    """Task 1 frozen with a random direction; task 2's direction is 2 * U_1 V_1 (spanned) or random."""
    model = make_model("slora_kd", **mode)
    model.begin_task(CLASSES_PER_TASK, 4)
    randomise_current(model, seed=1)
    model.freeze_current()
    model.begin_task(CLASSES_PER_TASK, 4)
    randomise_current(model, seed=2)
    if spanned:
        with torch.no_grad():
            for layer in model.directions.values():
                for t in layer.targets:
                    layer.up(t).copy_(2 * layer.frozen_up(t))
                    layer.down(t).copy_(layer.frozen_down(t))
    with torch.no_grad():
        model.magnitudes.copy_(torch.tensor([0.7, 1.3]))
    return model


@pytest.mark.parametrize("mode", list(KD_MODES.values()), ids=list(KD_MODES))
def test_kd_absorbs_a_direction_in_the_span(mode):
    model = second_direction(mode, spanned=True)
    assert model.absorb_if_spanned()
    assert model.kept_directions == 1 and not model.has_current and model.magnitudes.numel() == 1


@pytest.mark.parametrize("mode", list(KD_MODES.values()), ids=list(KD_MODES))
def test_kd_absorption_preserves_the_function(mode):
    model = second_direction(mode, spanned=True)
    before = logits(model)
    model.absorb_if_spanned()
    torch.testing.assert_close(logits(model), before, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", list(KD_MODES.values()), ids=list(KD_MODES))
def test_kd_keeps_a_direction_outside_the_span(mode):
    model = second_direction(mode, spanned=False)
    before = logits(model)
    assert not model.absorb_if_spanned()
    assert model.has_current and model.magnitudes.numel() == 2
    torch.testing.assert_close(logits(model), before, rtol=0, atol=0)


def test_kd_absorbed_coefficients_survive_a_magnitude_reset():
    """Official mode restarts magnitudes, so the absorbed part must live on as an offset (docs/method.md §7)."""
    model = second_direction({"normalise_current": True}, spanned=True)
    model.absorb_if_spanned()
    offsets = model.magnitude_offsets.clone()
    model.begin_task(CLASSES_PER_TASK, 4)
    assert torch.equal(model.magnitude_offsets, offsets) and offsets.abs().sum() > 0


# Every combination of the switches that decide how a direction is scaled.
SWITCHES = [{"normaliser": n, "normalise_current": c, "carry_magnitudes": m}
            for n in ("factor_norms", "product_norm") for c in (False, True) for m in (False, True)]
SWITCH_IDS = [f"{s['normaliser']}-{'normalised' if s['normalise_current'] else 'raw'}-"
              f"{'carried' if s['carry_magnitudes'] else 'reset'}" for s in SWITCHES]


def float64_kd_model(switches: dict) -> SLoRAViT:
    """Task 1 frozen with a random direction, task 2 begun with another; float64 so 1e-5 means exact."""
    model = SLoRAViT(tiny_vit().double(), AdapterConfig(rank=4, **switches))
    model.begin_task(CLASSES_PER_TASK, 4)
    randomise_current(model, seed=1)
    model.freeze_current()
    model.begin_task(CLASSES_PER_TASK, 4)
    randomise_current(model, seed=2)
    with torch.no_grad():
        model.magnitudes.copy_(torch.tensor([0.7, 1.3], dtype=torch.float64))
    return model


def set_current_to_old(model: SLoRAViT, scale_of_stored: bool) -> None:
    """The current direction := 2.5 x the old one: as stored (U_1 / n_1, so its contribution is in the span in
    every mode), or as raw factors (2.5 U_1 V_1 per projection, each projection with its own normaliser)."""
    with torch.no_grad():
        for layer in model.directions.values():
            for t in layer.targets:
                up = layer.frozen_up(t) / (layer.frozen_norms(t)[0] if scale_of_stored else 1.0)
                layer.up(t).copy_(2.5 * up)
                layer.down(t).copy_(layer.frozen_down(t))


@pytest.mark.parametrize("switches", SWITCHES, ids=SWITCH_IDS)
def test_kd_absorption_with_zero_residual_leaves_the_logits_unchanged(switches):
    model = float64_kd_model(switches)
    set_current_to_old(model, scale_of_stored=True)
    x = images().double()
    before = logits(model, x)
    assert model.absorb_if_spanned()
    assert float((logits(model, x) - before).abs().max()) <= 1e-5


@pytest.mark.parametrize("switches", SWITCHES, ids=SWITCH_IDS)
def test_kd_absorbs_a_multiple_of_an_old_direction_only_when_exact(switches):
    """2.5 x an old direction's raw factors: with a raw current direction and per-projection normalisers (the
    official semantics) the projections would need different coefficients, so one shared magnitude cannot hold
    it; the residual measures that error and KD keeps the direction instead of absorbing it inexactly."""
    model = float64_kd_model(switches)
    set_current_to_old(model, scale_of_stored=False)
    x = images().double()
    before = logits(model, x)
    absorbed = model.absorb_if_spanned()
    if absorbed:
        assert float((logits(model, x) - before).abs().max()) <= 1e-5
    else:
        assert model.span_residual() > 10 * model.cfg.kd_threshold
        assert torch.equal(logits(model, x), before)
    assert absorbed == (switches["normalise_current"] or switches["carry_magnitudes"])  # one normaliser for all


@pytest.mark.parametrize("switches", [*SWITCHES, *({**s, "magnitude_init": 1.0} for s in SWITCHES)],
                         ids=[*SWITCH_IDS, *(f"{i}-init1" for i in SWITCH_IDS)])
def test_seq_lora_is_plain_lora_under_every_switch(switches):
    """The lower bound is W0 + U V: no normaliser and no trainable magnitude, whatever the semantics say."""
    from slora.learners.slora.adapter import SLICES

    model = make_model("seq_lora", **switches)
    for task in range(2):
        model.begin_task(CLASSES_PER_TASK, 4)
        randomise_current(model, seed=task)
        assert not model.magnitudes.requires_grad
        weights = model.adapted_qkv_weights()
        for name, layer in model.directions.items():
            qkv = model.vit.blocks[int(name)].attn.qkv.weight
            for t, i in SLICES.items():
                rows = slice(i * layer.dim, (i + 1) * layer.dim)
                plain = qkv[rows] + (layer.up(t) @ layer.down(t) if t in layer.targets else 0)
                torch.testing.assert_close(weights[f"blocks.{name}.attn.qkv.weight"][rows], plain)


# -- function preservation at the task boundary ----------------------------------------------------------------
@DECOUPLED_VARIANTS
@pytest.mark.parametrize("mode", list(FUNCTION_PRESERVING.values()), ids=list(FUNCTION_PRESERVING))
def test_no_jump_at_the_task_boundary(variant, mode):
    model = make_model(variant, **mode)
    run_tasks(model, variant, tasks=1)
    model.begin_task(CLASSES_PER_TASK, variant.rank_for_task(1, model.cfg))
    train_steps(model, steps=3)
    before = logits(model)  # the model as evaluated after task 2
    if variant.absorb:
        model.absorb_if_spanned()
    model.freeze_current()
    model.begin_task(CLASSES_PER_TASK, variant.rank_for_task(2, model.cfg))
    torch.testing.assert_close(logits(model)[:, : before.shape[1]], before, rtol=0, atol=1e-5)


# -- merge and checkpoints ------------------------------------------------------------------------------------------
def max_merge_error(model: SLoRAViT) -> float:
    x = images(16, seed=5)
    return float((logits(model, x) - logits(model.merged(), x)).abs().max())


@ALL_VARIANTS
@pytest.mark.parametrize("semantics", ["official", "paper"])
def test_merged_model_equals_the_adapted_model_at_every_stage(variant, semantics):
    model = make_model(variant, **(PAPER_ADAPTER if semantics == "paper" else {}))
    for task in range(3):
        model.begin_task(CLASSES_PER_TASK, variant.rank_for_task(task, model.cfg))
        train_steps(model, steps=2)
        assert max_merge_error(model) <= 1e-4, f"task {task}, trained"
        if variant.absorb:
            model.absorb_if_spanned()
        model.freeze_current()
        assert max_merge_error(model) <= 1e-4, f"task {task}, frozen"


def loss_and_gradients(model: SLoRAViT, compute: str, autocast: bool = False) -> tuple:
    model.cfg.compute = compute
    model.zero_grad(set_to_none=True)
    x = images(16, seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    out.float().square().mean().backward()
    params = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach().float(), params


@ALL_VARIANTS
@pytest.mark.parametrize("semantics", ["official", "paper"])
def test_factored_and_merged_compute_give_the_same_outputs_and_gradients(variant, semantics):
    """adapter.compute changes the cost of a step, never its function: the same logits and gradients, with frozen
    directions, carried magnitudes and a trained current direction all present (task 3)."""
    model = make_model(variant, **(PAPER_ADAPTER if semantics == "paper" else {}))
    run_tasks(model, variant, tasks=2)
    model.begin_task(CLASSES_PER_TASK, variant.rank_for_task(2, model.cfg))
    randomise_current(model)
    merged, merged_grads = loss_and_gradients(model, "merged")
    factored, factored_grads = loss_and_gradients(model, "factored")
    assert torch.allclose(merged, factored, atol=1e-5, rtol=1e-4)
    assert merged_grads.keys() == factored_grads.keys() and "directions.0.up_q" in merged_grads
    for name, grad in merged_grads.items():
        assert torch.allclose(grad, factored_grads[name], atol=1e-6, rtol=1e-3), name


def test_factored_compute_under_bf16_tracks_fp32():
    model = make_model("slora")
    run_tasks(model, SLORA_VARIANTS["slora"], tasks=2)
    model.begin_task(CLASSES_PER_TASK, 4)
    randomise_current(model)
    exact, _ = loss_and_gradients(model, "merged")
    bf16, _ = loss_and_gradients(model, "factored", autocast=True)
    assert float((bf16 - exact).norm() / exact.norm()) < 0.02


def test_auto_compute_is_factored_while_the_total_rank_is_small_and_merged_beyond():
    """The cost rule on ViT-B/16 (d 768, 197 tokens an image, q and v), batch 64, and on ViT-Tiny (d 192), whose
    fp32 step measured faster merged."""
    vit_b = dict(tokens=64 * 197, dim=768, targets=2)
    assert cheaper_compute(rank=10, grad=True, autocast=False, **vit_b) == "factored"
    assert cheaper_compute(rank=200, grad=True, autocast=False, **vit_b) == "factored"
    assert cheaper_compute(rank=400, grad=True, autocast=True, **vit_b) == "factored"
    assert cheaper_compute(rank=700, grad=True, autocast=False, **vit_b) == "merged"
    assert cheaper_compute(rank=700, grad=True, autocast=True, **vit_b) == "merged"
    assert cheaper_compute(rank=10, grad=False, autocast=False, **vit_b) == "merged"  # evaluation folds
    vit_tiny = dict(tokens=32 * 50, dim=192, targets=2)  # 112 px
    assert cheaper_compute(rank=10, grad=True, autocast=False, **vit_tiny) == "merged"
    assert cheaper_compute(rank=10, grad=True, autocast=True, **vit_tiny) == "factored"
    model = make_model("slora")
    model.begin_task(CLASSES_PER_TASK, 4)
    assert model.compute_for(images(64)) == "merged"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.compute_for(images(64)) == "factored"
    model.cfg.compute = "factored"
    assert model.compute_for(images(64)) == "factored"


def test_merged_model_is_a_plain_timm_vit():
    model = make_model("slora")
    run_tasks(model, SLORA_VARIANTS["slora"], tasks=2)
    merged = model.merged()
    assert type(merged) is type(model.vit) and merged.num_classes == model.num_classes
    assert not any("direction" in k for k in merged.state_dict())


@ALL_VARIANTS
def test_adapter_state_round_trip_reproduces_outputs_exactly(variant):
    model = make_model(variant)
    run_tasks(model, variant, tasks=2)
    model.begin_task(CLASSES_PER_TASK, variant.rank_for_task(2, model.cfg))
    train_steps(model)
    fresh = make_model(variant)
    fresh.load_adapter_state(model.adapter_state())
    assert torch.equal(logits(fresh), logits(model))
    assert torch.equal(fresh.magnitudes, model.magnitudes) and fresh.has_current


def test_adapter_state_holds_no_backbone_weight():
    model = make_model("slora")
    run_tasks(model, SLORA_VARIANTS["slora"], tasks=1)
    assert not any(k.startswith("vit.") for k in model.adapter_state())


def test_magnitudes_have_no_task_limit():
    model = make_model("slora", rank=1, carry_magnitudes=True)
    for task in range(25):
        model.begin_task(1, 1)
        randomise_current(model, seed=task)
        with torch.no_grad():
            model.magnitudes[-1] = 0.01
        model.freeze_current()
    assert model.magnitudes.numel() == 25 and model.kept_directions == 25 and model.num_classes == 25
    assert torch.isfinite(logits(model)).all()
    assert max_merge_error(model) <= 1e-4


def test_model_rejects_a_vit_with_its_own_classifier():
    with pytest.raises(ValueError, match="num_classes=0"):
        SLoRAViT(tiny_vit().__class__(img_size=8, patch_size=4, in_chans=1, embed_dim=24, depth=1, num_heads=2,
                                      num_classes=3), AdapterConfig())


@pytest.mark.parametrize("bad", [0, -1])
def test_begin_task_rejects_a_non_positive_rank(bad):
    with pytest.raises(ValueError, match=f"rank={bad}"):
        make_model("slora").begin_task(CLASSES_PER_TASK, bad)
