"""Score an exported stage folder with plain timm:
``python pipelines/evaluate.py checkpoint=runs/<run>/merged/stage_05 [benchmark=digits data_root=... ...]``.

The model comes from ``timm.create_model("local-dir:...")`` and its preprocessing from timm's
``resolve_data_config``, so this checks that the folder alone reproduces the run; a prompt method's export
(``prompts.safetensors`` + ``slora.json``) is rebuilt on its run's backbone by slora.learners.load_exported. The data
config defaults to the run's own (``<run>/results.json``, two levels above the stage folder, or the export's);
``key=value`` overrides it. The test
split is every class the model has (labels are positions in the class order), in eval batches of the size and
order slora.continual uses, so the printed accuracy equals the run's accuracy at that stage exactly.
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path


from slora.config import DataConfig
from slora.continual import EVAL_BATCH
from slora.data import load_benchmark
from slora.data.batches import eval_batches
from slora.metrics import accuracy
from slora.configure import (ConfigError, check_group, check_value, describe_keys, from_dict, parse_options,
                              split_overrides, wants_help)
from slora.runner import resolve_device
from slora.serving import is_prompt_export, load_classifier
from slora.training import predict

DATA_FIELDS = typing.get_type_hints(DataConfig)
KEYS = ("checkpoint", "device", "precision", *DATA_FIELDS)


def parse_args(argv: list[str]) -> tuple[Path, DataConfig, str, str]:
    """checkpoint=PATH (required), device=, precision= (default: the run's), and DataConfig fields (bare or as
    data.FIELD)."""
    overrides = split_overrides(argv)
    keys = {key: key.removeprefix("data.") for key in overrides}
    unknown = [key for key, bare in keys.items() if bare not in KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    if "checkpoint" not in overrides:
        raise ConfigError("checkpoint=PATH is required: a stage folder such as runs/<run>/merged/stage_05")
    checkpoint = Path(overrides["checkpoint"].removeprefix("local-dir:")).expanduser()
    if not ((checkpoint / "config.json").is_file() or is_prompt_export(checkpoint)):
        what = ("no such folder" if not checkpoint.exists() else
                "neither a timm folder (config.json) nor a prompt method's export (prompts.safetensors + slora.json)")
        raise ConfigError(f"checkpoint={checkpoint}: {what}; expected a stage folder such as "
                          "runs/<run>/merged/stage_05")
    given = {keys[key]: value for key, value in overrides.items() if keys[key] in DATA_FIELDS}
    data = parse_options(DataConfig, given, base=run_data_config(checkpoint))
    check_group("benchmark", data.benchmark)
    precision = overrides.get("precision") or run_config(checkpoint).get("precision", "fp32")
    check_value("precision", precision)
    return checkpoint, data, overrides.get("device", "auto"), precision


def run_config(checkpoint: Path) -> dict:
    """The config of the run that wrote this stage folder: a prompt export carries it, else <run>/results.json
    two levels up; {} when neither is there."""
    if is_prompt_export(checkpoint):
        return json.loads((checkpoint / "slora.json").read_text())["config"]
    results = checkpoint.resolve().parent.parent / "results.json"
    return json.loads(results.read_text()).get("config", {}) if results.is_file() else {}


def run_data_config(checkpoint: Path) -> DataConfig:
    """The data config of the run that wrote this stage folder (<run>/merged/stage_XX), else the defaults."""
    saved = run_config(checkpoint).get("data", {})
    return from_dict(DataConfig, {k: v for k, v in saved.items() if k in DATA_FIELDS})


def evaluate_checkpoint(checkpoint: Path, data: DataConfig, device: str = "auto", precision: str = "fp32") -> dict:
    """Accuracy of the exported model on the test images of every class it has (forward in `precision`)."""
    device = resolve_device(device)
    model, mean, std = load_classifier(checkpoint)
    model, mean, std = model.to(device), mean.to(device), std.to(device)
    bench = load_benchmark(data)
    seen = bench.test_labels < model.num_classes
    images, labels = bench.test_images[seen], bench.test_labels[seen]
    predictions = predict(model, ((x - mean) / std for x in eval_batches(images, EVAL_BATCH, device)), precision)
    return {"accuracy": accuracy(predictions, labels), "num_classes": model.num_classes,
            "num_images": len(labels), "benchmark": data.benchmark, "checkpoint": str(checkpoint)}


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(__doc__.strip() + "\n\nKeys: checkpoint=PATH (required), device=auto, precision= (the run's), and the "
              "data keys (bare or as data.KEY; defaults from the run):\n" + describe_keys(DataConfig()))
        return 0
    try:
        checkpoint, data, device, precision = parse_args(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = evaluate_checkpoint(checkpoint, data, device, precision)
    print(f"accuracy {result['accuracy']:.4%} on {result['num_images']} test images of {result['num_classes']} "
          f"classes ({data.benchmark}, {checkpoint})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
