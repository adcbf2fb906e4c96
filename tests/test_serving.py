"""The registered model is an MLflow pyfunc model: it loads in one line and `mlflow models serve` answers with it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.sweeper import tracking
from slora.configure import compose_run
from slora.runner import run_continual
from slora.serving import load_classifier

SHAPE, CLASSES = (1, 8, 8), 10


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A real digits run's last stage, logged on an MLflow run and registered as the sweeps register their best."""
    tmp = tmp_path_factory.mktemp("serving")
    cfg = compose_run(["num_tasks=2", "epochs=1", "max_train_per_class=10", "progress=false", "save_merged=last",
                       f"out_dir={tmp / 'run'}"])
    run_continual(cfg, log=lambda *_: None)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    experiment = tracking.prepare_experiment(uri, "serving", tmp / "artifacts")
    client = tracking.client(uri)
    run_id = client.create_run(experiment).info.run_id
    client.log_artifacts(run_id, str(tmp / "run" / "merged" / "stage_02"), artifact_path="merged/stage_02")
    tracking.register_best(uri, run_id, 2, "slora-best", "a test champion", {"method": "slora"}, SHAPE, CLASSES)
    images = np.random.default_rng(0).random((5, *SHAPE), dtype=np.float32)
    model, mean, std = load_classifier(tmp / "run" / "merged" / "stage_02")
    with torch.no_grad():
        expected = model((torch.from_numpy(images) - mean) / std).numpy()
    return uri, images, expected


def test_the_champion_loads_as_a_pyfunc_model_and_gives_the_runs_logits(champion):
    import mlflow

    uri, images, expected = champion
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/slora-best@champion")
    assert np.array_equal(model.predict(images), expected)
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, *SHAPE)
    names = model.predict(images, params={"output": "classes"})
    assert len(names) == 5 and all(isinstance(n, str) for n in names)


@pytest.mark.slow
def test_mlflow_models_serve_answers_an_invocations_request_with_the_same_logits(champion, tmp_path):
    uri, images, expected = champion
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = str(Path(sys.executable).parent)  # the server starts uvicorn from the environment's PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    server = subprocess.Popen([str(Path(bin_dir) / "mlflow"), "models", "serve", "-m",
                               "models:/slora-best@champion", "--env-manager", "local", "-h", "127.0.0.1",
                               "-p", str(port)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "serve.log", "w"), start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": images.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert np.allclose(np.asarray(answer["predictions"], dtype=np.float32), expected, atol=1e-6)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
