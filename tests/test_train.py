"""End to end: the training CLI in a subprocess, then RL Zoo's own enjoy on its run folder."""

import os
import subprocess
import sys
from pathlib import Path

import yaml
from stable_baselines3 import DQN

from sb3_breakout.config import default_config, load_entry
from sb3_breakout.torch_layers import NatureCNN

ENV = "BreakoutNoFrameskip-v4"


def run(args, cwd, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_default_entry_is_the_notebooks_recipe():
    entry = load_entry(default_config("dqn"), ENV)
    expected = dict(buffer_size=100_000, batch_size=32, gamma=0.99, learning_rate=2.5e-4, max_grad_norm=1.0,
                    train_freq=4, gradient_steps=1, target_update_interval=10_000, learning_starts=32,
                    frame_stack=4, n_timesteps=1e7)
    assert {k: entry[k] for k in expected} == expected
    callbacks = {next(iter(c)): next(iter(c.values())) for c in entry["callback"]}
    assert callbacks["sb3_breakout.callbacks.LinearEpsilonCallback"] == dict(
        random_steps=50_000, decay_steps=1_000_000, initial_eps=1.0, final_eps=0.1)
    assert callbacks["sb3_breakout.callbacks.RunningRewardCallback"]["solved_at"] == 40.0
    keras = load_entry(default_config("dqn"), ENV, "keras")
    assert keras["env_wrapper"][0]["sb3_breakout.wrappers.breakout_preprocessing"]["profile"] == "keras"
    assert {k: keras[k] for k in expected} == expected


def test_train_then_rl_zoo_enjoy(tmp_path):
    train = run(["-m", "sb3_breakout.train", "-n", "3000", "--seed", "7", "-f", "logs",
                 "-params", "buffer_size:5000"], cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    assert (run_dir / f"{ENV}.zip").is_file()
    assert (run_dir / ENV / "config.yml").is_file() and (run_dir / ENV / "args.yml").is_file()
    monitor = (run_dir / "0.monitor.csv").read_text().splitlines()
    assert len(monitor) > 3, "3,000 mostly random steps finish several games"
    saved = yaml.safe_load((run_dir / ENV / "config.yml").read_text())
    assert saved["buffer_size"] == 5000 and saved["target_update_interval"] == 10_000

    model = DQN.load(run_dir / f"{ENV}.zip", device="cpu")
    assert isinstance(model.q_net.features_extractor, NatureCNN)
    assert sum(p.numel() for p in model.q_net.parameters()) == 1_686_180
    assert model.num_timesteps == 3000
    assert model.exploration_rate == 1.0  # still in the 50,000-step random phase

    enjoy = run(["-m", "rl_zoo3.enjoy", "--algo", "dqn", "--env", ENV, "-f", "logs", "--no-render",
                 "-n", "1000", "--gym-packages", "sb3_breakout"], cwd=tmp_path)
    assert enjoy.returncode == 0, enjoy.stderr[-3000:]
    assert "Atari Episode Score" in enjoy.stdout

    # a second run never overwrites the first: it gets the next id
    again = run(["-m", "sb3_breakout.train", "-n", "100", "--seed", "7", "-f", "logs",
                 "-params", "buffer_size:500"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "logs" / "dqn" / f"{ENV}_2" / f"{ENV}.zip").is_file()
    assert DQN.load(run_dir / f"{ENV}.zip", device="cpu").num_timesteps == 3000


def test_unknown_profile_is_a_one_line_error(tmp_path):
    result = run(["-m", "sb3_breakout.train", "--profile", "atari2600", "-f", "logs"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "'atari2600'" in result.stderr and "deepmind, keras" in result.stderr
    assert not (tmp_path / "logs").exists()
