"""The README's commands stay valid: every `python pipelines/run.py|sweep.py ...` line of a bash block in README.md
and docs/*.md, the `slora-run` / `slora-sweep` console scripts and the sweep arguments given to `slurm/sweep.sbatch`,
run with Hydra's `--cfg job` (compose, check and print the config: nothing trains, Ray does not start). One
subprocess runs every command through its entry point's `main` (what the script's `cli` exits with), since each
interpreter start costs seconds of imports; the scripts themselves run as subprocesses for the bad-key check.

Only run.py and sweep.py take `--cfg job`; the other entry points the pages show (evaluate, study, compare, reproduce,
pretrain, bench, bench_asha, device_check) start real work on any valid command line, so for them this test checks
only that the file exists. `DATA` and `MODEL` in a command stand for a dataset folder and a backbone folder: they
become empty folders here, since `--cfg job` checks that a local `backbone.checkpoint` exists and nothing more.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tiny import PYTHON, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CFG_JOB = ("run", "sweep")  # the entry points that print their config with --cfg job
PLACEHOLDERS = ("DATA", "MODEL")
OPERATORS = {"&&", "||", "|", ";", "&"}
PYTHON_WORD = re.compile(r"(\S*/)?python3?")
ENTRY = re.compile(r"pipelines/(\w+)\.py")
BAD_KEY = ["no_such_key=1"]


def console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts]: console script -> entry point name ("slora-run" -> "run")."""
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    return {name: module for name, module in re.findall(r'^([\w-]+)\s*=\s*"pipelines\.(\w+):cli"', section[1], re.M)}


SCRIPTS = {**console_scripts(), "slurm/sweep.sbatch": "sweep"}  # the batch script runs sweep.py with the rest


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    entry: str  # pipelines/<entry>.py
    args: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}:{self.entry}"


def bash_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number of the first line, text) of every ```bash block."""
    blocks, start, lines = [], None, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if start is None and line.strip() == "```bash":
            start, lines = number + 1, []
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines)))
            start = None
        elif start is not None:
            lines.append(line)
    return blocks


def logical_lines(start: int, block: str) -> list[tuple[int, str]]:
    """Lines joined at their trailing backslash, each with the number of its first line."""
    out, pending, first = [], "", start
    for number, line in enumerate(block.splitlines(), start):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    return out


def commands_in(path: Path) -> list[Command]:
    found = []
    for start, block in bash_blocks(path):
        for number, line in logical_lines(start, block):
            words = shlex.split(line, comments=True)
            segments, current = [], []
            for word in words:
                if word in OPERATORS:
                    segments.append(current)
                    current = []
                else:
                    current.append(word)
            segments.append(current)
            for segment in segments:
                for i, word in enumerate(segment):
                    entry = None
                    if PYTHON_WORD.fullmatch(word) and i + 1 < len(segment) and ENTRY.fullmatch(segment[i + 1]):
                        entry, args = ENTRY.fullmatch(segment[i + 1])[1], segment[i + 2:]
                    elif word.rsplit("/", 1)[-1] in SCRIPTS or word in SCRIPTS:
                        entry = SCRIPTS.get(word) or SCRIPTS[word.rsplit("/", 1)[-1]]
                        args = segment[i + 1:]
                    if entry:
                        found.append(Command(str(path.relative_to(ROOT)), number, entry, tuple(args)))
                        break
    return found


COMMANDS = [c for page in PAGES for c in commands_in(page)]
CHECKED = [c for c in COMMANDS if c.entry in CFG_JOB]


def with_placeholders(args: tuple[str, ...], folder: Path) -> list[str]:
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and value in PLACEHOLDERS:
            (folder / value.lower()).mkdir(exist_ok=True)
            arg = f"{key}={folder / value.lower()}"
        out.append(arg)
    return out


def run_entry(entry: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, f"pipelines/{entry}.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)


# Runs [entry, args] pairs through pipelines.<entry>.main in one interpreter: -> [exit code, stdout, stderr tail].
DRIVER = """
import contextlib, importlib, io, json, sys, traceback
results = []
for entry, args in json.load(open(sys.argv[1])):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = importlib.import_module(f"pipelines.{entry}").main(args)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
    results.append([code, out.getvalue(), err.getvalue()[-2000:]])
json.dump(results, open(sys.argv[2], "w"))
"""


def cfg_job_args(command: Command, folder: Path) -> list[str]:
    args = with_placeholders(command.args, folder)
    return args if {"--cfg", "--help", "-h"} & set(args) else [*args, "--cfg", "job"]


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> list[tuple[list[str], int, str, str]]:
    """Each checked command's (arguments, exit code, stdout, stderr tail), in CHECKED's order, from one subprocess."""
    folder = tmp_path_factory.mktemp("readme")
    jobs = [(c.entry, cfg_job_args(c, folder)) for c in CHECKED] + [(e, [*BAD_KEY, "--cfg", "job"]) for e in CFG_JOB]
    (folder / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([PYTHON, "-c", DRIVER, str(folder / "jobs.json"), str(folder / "results.json")], cwd=ROOT,
                   check=True, timeout=600)
    results = json.loads((folder / "results.json").read_text())
    return [(args, *result) for (_, args), result in zip(jobs, results, strict=True)]


def test_the_pages_show_run_and_sweep_commands_and_every_entry_point_exists():
    readme = [c for c in COMMANDS if c.page == "README.md"]
    assert {"run", "sweep"} <= {c.entry for c in readme}, "no run.py / sweep.py command found in the README"
    missing = sorted({c.id for c in COMMANDS if not (ROOT / "pipelines" / f"{c.entry}.py").is_file()})
    assert not missing, f"commands name entry points that do not exist: {missing}"


def test_the_setup_commands_open_the_readme_and_ci_runs_its_test_command():
    (_, first), *_ = bash_blocks(ROOT / "README.md")
    setup, tests = first.splitlines()
    assert setup.endswith(".venv/bin/python pipelines/sweep.py variant=slora_pp")
    test_command = tests.rsplit(" && ", 1)[-1]
    assert test_command == ".venv/bin/python -m pytest -q"
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash to parse the blocks with")
@pytest.mark.parametrize("page, start, block", [(str(p.relative_to(ROOT)), s, b) for p in PAGES
                                                 for s, b in bash_blocks(p)], ids=lambda v: str(v)[:40])
def test_every_bash_block_is_valid_bash(page, start, block):
    result = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
    assert result.returncode == 0, f"{page}:{start}: {result.stderr}"


@pytest.mark.parametrize("index", [pytest.param(i, id=c.id) for i, c in enumerate(CHECKED)])
def test_a_shown_command_composes_its_config(index, composed):
    command = CHECKED[index]
    args, code, stdout, stderr = composed[index]
    assert code == 0, f"{command.id}: {' '.join(args)}\n{stderr}"
    assert stdout.strip()
    space = {a.split("=", 1)[0] for a in args if a.startswith("space.")}
    if command.entry == "sweep" and space:  # --cfg job prints the run config; the space's keys are checked here
        from pipelines.sweeper.options import parse_sweep_args
        from search_spaces import load_space

        sweep, _, overrides = parse_sweep_args([a for a in args if a not in ("--cfg", "job")])
        assert {f"space.{k}" for k in overrides} == space
        load_space(sweep.variant, overrides)


@pytest.mark.parametrize("entry", CFG_JOB)
def test_a_bad_key_fails_with_cfg_job(entry, composed):
    result = run_entry(entry, [*BAD_KEY, "--cfg", "job"])  # the script itself, as a user runs it
    assert result.returncode != 0 and "no_such_key" in result.stderr, result.stderr[-2000:]
    _, code, _, stderr = composed[len(CHECKED) + CFG_JOB.index(entry)]  # and the way the commands above ran
    assert code != 0 and "no_such_key" in stderr, stderr
