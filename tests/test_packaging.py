"""A built wheel holds every file the code reads, and its console scripts: what a non-editable install (a Docker
image, a Ray runtime_env, a cluster's shared venv) runs from."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tiny import ROOT

DATA_SUFFIXES = (".yaml", ".txt")  # search spaces, config groups, class lists
PACKAGES = ("slora", "search_spaces", "pipelines")
LEFT_BEHIND = shutil.ignore_patterns(".git", ".venv", "runs", "mlartifacts", "mlruns", "mlflow.db", "__pycache__",
                                     "*.egg-info", "build", ".pytest_cache")


@pytest.mark.slow
def test_a_built_wheel_holds_every_data_file_and_the_console_scripts(tmp_path):
    source = tmp_path / "src"  # a copy: an in-tree build would leave build/ and egg-info in the checkout
    shutil.copytree(ROOT, source, ignore=LEFT_BEHIND)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("slora_sweep-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*")
              if p.suffix in DATA_SUFFIXES and "__pycache__" not in p.parts}
    assert {"search_spaces/slora_pp.yaml", "slora/conf/run.yaml", "slora/data/tinyimagenet_100.txt"} <= wanted
    assert wanted <= names, f"left out of the wheel: {sorted(wanted - names)}"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script, module in (("slora-run", "run"), ("slora-sweep", "sweep"), ("slora-compare", "compare")):
        assert f"{script} = pipelines.{module}:cli" in scripts
