"""No option silently ignored: a key a method does not read is refused for that method, on the command line, in a
sweep's space (``space.KEY``) and in the harnesses that pass one protocol to many methods."""

from __future__ import annotations

import pytest
import yaml

from pipelines.compare import method_keys
from search_spaces import available_spaces, check_reads, load_space
from slora import config
from slora.config import RunConfig
from slora.configure import ConfigError, compose_run, flat_config, leaf_fields
from slora.learners import LEARNERS
from slora.learners.slora import SLORA_VARIANTS

FIELDS = leaf_fields(RunConfig)
METHOD_KEYS = sorted(path for path, leaf in FIELDS.items() if leaf.methods)
# Non-default values the owners accept where "the next value" would not make a valid config
VALUES = {"adapter.targets": "[q]", "adapter.blocks": "[0]", "adapter.rank_schedule": "[[1,4]]",
          "optim.milestones": "[2]", "inflora.threshold_begin": "0.9", "inflora.threshold_end": "0.99",
          "coda_prompt.length": "4", "coda_prompt.pool_size": "10", "l2p.top_k": "2", "dualprompt.pool_size": "12",
          "dualprompt.length": "4", "dualprompt.g_length": "4", "l2p.length": "4"}


def other_value(path: str) -> str:
    default, leaf = flat_config(RunConfig())[path], FIELDS[path]
    if path in VALUES:
        return VALUES[path]
    if leaf.choices:
        return next(c for c in leaf.choices if c != default)
    if isinstance(default, bool):
        return str(not default).lower()
    return str(default + 1 if isinstance(default, int) else default / 2)


def parsed(text: str):
    value = yaml.safe_load(text)
    return float(value) if isinstance(value, str) and value[:1].isdigit() else value  # YAML 1.1 reads 4.5e-05 as text


def test_the_method_specific_keys_cover_every_method_and_match_the_variants_flags():
    owners = {path: set(FIELDS[path].methods) for path in METHOD_KEYS}
    assert set().union(*owners.values()) <= set(LEARNERS)
    assert owners["adapter.rank_schedule"] == {n for n, v in SLORA_VARIANTS.items() if v.reduce_rank}
    assert owners["adapter.kd_threshold"] == {n for n, v in SLORA_VARIANTS.items() if v.absorb}
    assert owners["optim.lr_magnitude"] == {n for n, v in SLORA_VARIANTS.items() if v.decoupled}
    assert owners["adapter.targets"] == set(SLORA_VARIANTS) and owners["optim.lr_backbone"] == {"seq_ft"}
    trains = {n for n, make in LEARNERS.items() if getattr(make, "func", make).trains}
    assert owners["optim.epochs"] == trains == set(config.TRAINED) and "simplecil" not in trains
    assert len(METHOD_KEYS) >= 30


@pytest.mark.parametrize("method", sorted(LEARNERS))
def test_every_method_key_is_taken_by_the_methods_that_read_it_and_refused_by_the_others(method):
    for path in METHOD_KEYS:
        value, owners = other_value(path), FIELDS[path].methods
        if method in owners:
            assert flat_config(compose_run({"variant": method, path: value}))[path] == parsed(value), path
        else:
            with pytest.raises(ConfigError) as err:
                compose_run({"variant": method, path: value})
            message = str(err.value)
            assert "\n" not in message and f"variant={method} does not read {path}" in message
            assert all(owner in message for owner in owners), message


def test_a_value_equal_to_the_default_is_refused_too():
    with pytest.raises(ConfigError, match="variant=inflora does not read adapter.normaliser"):
        compose_run(["variant=inflora", "normaliser=factor_norms"])


@pytest.mark.parametrize("name", available_spaces())
def test_every_search_space_samples_only_keys_its_methods_read(name):
    check_reads(load_space(name), name)


@pytest.mark.parametrize("variant, space, names", [
    ("inflora", {"normaliser": "[factor_norms,product_norm]"}, ["space.adapter.normaliser", "variant=inflora"]),
    ("seq_ft", {"rank": "[4,8]"}, ["space.adapter.rank", "variant=seq_ft", "inflora"]),
    ("all", {"normaliser": "[factor_norms,product_norm]"}, ["variant=seq_lora", "slora_kd"]),  # no `when`
])
def test_a_space_key_obeys_the_same_rule(variant, space, names):
    with pytest.raises(ConfigError) as err:
        check_reads(load_space(variant, space), variant)
    assert all(n in str(err.value) for n in names), err.value


def test_a_sweep_refuses_unread_keys_and_a_zero_validation_share_before_ray_starts(capsys):
    import sys

    from pipelines.sweep import main as sweep

    for args, names in ((["variant=all", "lr_magnitude=0.02"], ["variant=seq_lora", "optim.lr_magnitude"]),
                        (["variant=slora", "space.val_fraction=[0,0.1]"], ["space.data.val_fraction", "(0, 1)"]),
                        (["variant=coda_prompt", "space.rank=[2]"], ["variant=coda_prompt", "adapter.rank"])):
        assert sweep(args) == 2
        err = capsys.readouterr().err
        assert all(n in err for n in names), err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_a_comparison_passes_each_method_only_the_protocol_keys_it_reads(capsys):
    sweep_keys, options = method_keys("simplecil", {"scheduler": "none", "space.optim.epochs": "[1,2]"},
                                      {"epochs": "2", "max_train_per_class": "100"})
    assert sweep_keys == {"scheduler": "none"} and options == {"max_train_per_class": "100"}
    assert "simplecil does not read optim.epochs" in capsys.readouterr().out
    sweep_keys, options = method_keys("inflora", {"space.optim.epochs": "[1,2]"}, {"epochs": "2"})
    assert sweep_keys == {"space.optim.epochs": "[1,2]"} and options == {"epochs": "2"}
