"""ray_cluster.yaml passes Ray's own validator (what `ray up` runs before touching the cloud)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load():
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())


def test_cluster_yaml_validates_with_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(load()))


def test_dashboard_and_mlflow_listen_on_loopback_only():
    config = load()
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])
    assert any("--host 127.0.0.1" in c for c in config["head_setup_commands"])


def test_head_runs_no_trials_and_gpu_workers_autoscale_from_zero():
    nodes = load()["available_node_types"]
    assert nodes["head"]["resources"]["CPU"] == 0
    assert all(nodes[n]["min_workers"] == 0 for n in nodes if n != "head")
