"""Shared helpers: small configurations of the real recipe, and the CLI in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch as th
import yaml

from sb3_breakout.config import default_config, load_entry

ENV = "BreakoutNoFrameskip-v4"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per CPU (pyproject's addopts): a worker's in-process learners get one torch thread each.
    # With torch's default (all cores) in every worker, two workers on 2 cores spun against each other and
    # the in-process training tests ran ~3x slower (test_double_q.py: 101 s against ~35 s). Tests of
    # thread choices set their own counts; the training subprocesses take theirs from their command line.
    th.set_num_threads(1)


def small_entry(**overrides):
    """
    The default entry with a small buffer, a short epsilon schedule (random 200, decay 2,000) and batches
    of 8 (an update ~2.6x cheaper than the recipe's 32 on one thread: these runs test what a run does,
    not how it learns, and most of their time was updates).
    """
    entry = load_entry(default_config("dqn"), ENV)
    entry.update(buffer_size=5_000, batch_size=8, callback=[
        {"sb3_breakout.callbacks.LinearEpsilonCallback": dict(random_steps=200, decay_steps=2_000,
                                                               initial_eps=1.0, final_eps=0.1)},
        {"sb3_breakout.callbacks.RunningRewardCallback": dict(log_every=500, window=100, solved_at=40.0)},
    ])
    entry.update(overrides)
    return entry


def write_conf(folder: Path, entry: dict, name: str = "conf.yml") -> Path:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump({ENV: entry}))
    return path


def run_cli(args, cwd, timeout=600, env=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


@pytest.fixture
def small_conf(tmp_path):
    return write_conf(tmp_path, small_entry())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """
    One real training run shared by the evaluate, record and plot tests (treat it as read-only):
    ``sb3_breakout.train -n 2000 --seed 0 -params buffer_size:5000 batch_size:8 --save-freq 1000 --num-threads 1``
    on the default recipe (one torch thread: several times faster on a busy CPU; batches of 8: its 492
    updates were ~70% of its time at 32), so the run folder holds the final model, ``0.monitor.csv``,
    ``config.yml``/``args.yml`` and the checkpoints ``step_1000`` and ``step_2000``.
    """
    root = tmp_path_factory.mktemp("tiny_run")
    result = run_cli(["-m", "sb3_breakout.train", "-n", "2000", "--seed", "0", "-f", "logs",
                      "-params", "buffer_size:5000", "batch_size:8", "--save-freq", "1000",
                      "--num-threads", "1"], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "logs" / "dqn" / f"{ENV}_1"


@pytest.fixture(scope="session")
def tiny_qrdqn_run(tmp_path_factory):
    """
    The same as ``tiny_run`` with QR-DQN (``--algo qrdqn``, the default entry of hyperparams/qrdqn.yml):
    final model, Monitor CSV, config.yml/args.yml, checkpoints step_1000 and step_2000 (read-only).
    """
    root = tmp_path_factory.mktemp("tiny_qrdqn_run")
    result = run_cli(["-m", "sb3_breakout.train", "--algo", "qrdqn", "-n", "2000", "--seed", "0", "-f", "logs",
                      "-params", "buffer_size:5000", "batch_size:8", "--save-freq", "1000",
                      "--num-threads", "1"], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "logs" / "qrdqn" / f"{ENV}_1"
