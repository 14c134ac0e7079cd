"""End to end: the training CLI in a subprocess, then RL Zoo's own enjoy on its run folder."""

import os
import re
import subprocess
import sys

import pytest
import torch as th
import yaml
from stable_baselines3 import DQN

from conftest import small_entry, write_conf
from sb3_breakout import train
from sb3_breakout.config import default_config, load_entry
from sb3_breakout.torch_layers import NatureCNN

ENV = "BreakoutNoFrameskip-v4"


def run(args, cwd, timeout=600, env_extra=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})})


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


def test_fast_preset_trains_with_three_step_returns(tmp_path):
    fast = load_entry(default_config("dqn"), ENV, "fast")
    assert fast["target_update_interval"] == 1000 and fast["learning_rate"] == 1e-4
    assert fast["callback"][0]["sb3_breakout.callbacks.LinearEpsilonCallback"] == dict(
        random_steps=20_000, decay_steps=250_000, initial_eps=1.0, final_eps=0.01)
    result = run(["-m", "sb3_breakout.train", "--profile", "fast", "-n", "300", "--seed", "2", "-f", "logs",
                  "-params", "buffer_size:2000", "learning_starts:100", "--num-threads", "1", "--no-progress"],
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    model = DQN.load(tmp_path / "logs" / "dqn" / f"{ENV}_1" / f"{ENV}.zip")
    assert model.replay_buffer_kwargs == {"n_steps": 3, "gamma": 0.99}


def test_train_then_rl_zoo_enjoy(tmp_path):
    train = run(["-m", "sb3_breakout.train", "-n", "3000", "--seed", "7", "-f", "logs",
                 "-params", "buffer_size:5000", "batch_size:8"], cwd=tmp_path)  # batches of 8: cheap updates
    assert train.returncode == 0, train.stderr[-3000:]
    # the default --num-threads auto timed one thread and more once updates began, and kept one count
    assert re.search(r"^torch threads: \d+ \(agent steps/s by threads: 1: \d+", train.stdout, re.MULTILINE), \
        train.stdout[-2000:]
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    assert (run_dir / f"{ENV}.zip").is_file()
    assert (run_dir / ENV / "config.yml").is_file() and (run_dir / ENV / "args.yml").is_file()
    monitor = (run_dir / "0.monitor.csv").read_text().splitlines()
    assert len(monitor) > 3, "3,000 mostly random steps finish several games"
    saved = yaml.safe_load((run_dir / ENV / "config.yml").read_text())
    assert saved["buffer_size"] == 5000 and saved["batch_size"] == 8 and saved["target_update_interval"] == 10_000

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


# ------------------------------------------------------------------------------ bad input, table-driven
EPS = "sb3_breakout.callbacks.LinearEpsilonCallback"


def eps_callback(**kwargs):
    return [{EPS: {"random_steps": 100, "decay_steps": 1000, "initial_eps": 1.0, "final_eps": 0.1, **kwargs}}]


# (id, entry overrides or None, extra CLI args, words the one-line message must contain)
BAD_INPUTS = [
    ("missing conf", None, ["-conf", "no_such.yml"], ["cannot read config file", "no_such.yml"]),
    ("broken yaml", "broken", [], ["not valid YAML", "line"]),
    ("unknown key", dict(learning_rat=1e-4), [], ["unknown hyperparameter 'learning_rat'"]),
    ("wrong type", dict(buffer_size="lots"), [], ["buffer_size='lots'", "integer >= 1"]),
    ("lr zero", dict(learning_rate=0.0), [], ["learning_rate=0.0", "> 0"]),
    ("gamma above 1", dict(gamma=1.5), [], ["gamma=1.5", "(0, 1]"]),
    ("batch > buffer", dict(batch_size=64, buffer_size=32), [], ["batch_size=64", "buffer_size=32"]),
    ("negative steps", dict(n_timesteps=-10), [], ["n_timesteps=-10", ">= 0"]),
    ("negative -n", {}, ["-n", "-5"], ["--n-timesteps=-5"]),
    ("eps above 1", dict(callback=eps_callback(final_eps=1.5)), [], ["final_eps=1.5", "[0, 1]"]),
    ("final > initial", dict(callback=eps_callback(initial_eps=0.2, final_eps=0.5)), [],
     ["final_eps=0.5", "initial_eps=0.2"]),
    ("unknown policy_kwargs class", dict(policy_kwargs="dict(features_extractor_class=importlib.import_module("
                                         "'sb3_breakout.torch_layers').NoSuchCNN)"), [],
     ["policy_kwargs", "NoSuchCNN"]),
    ("unknown env_wrapper", dict(env_wrapper=["sb3_breakout.wrappers.NoSuchWrapper"]), [],
     ["env_wrapper 'sb3_breakout.wrappers.NoSuchWrapper' cannot be imported"]),
    ("unknown callback", dict(callback=["sb3_breakout.callbacks.NoSuchCallback"]), [],
     ["callback 'sb3_breakout.callbacks.NoSuchCallback' cannot be imported"]),
    ("bad wrapper profile", dict(env_wrapper=[{"sb3_breakout.wrappers.breakout_preprocessing": {"profile": "atari"}}]),
     [], ["unknown profile 'atari'"]),
    ("unknown profile entry", {}, ["--profile", "fast2"], ["no entry 'BreakoutNoFrameskip-v4-fast2'", "deepmind"]),
    ("no entry for the env id", {}, ["--env", "BreakoutNoFrameskip-v9"], ["'BreakoutNoFrameskip-v9'"]),
    ("policy name", dict(policy="NoSuchPolicy"), [], ["policy='NoSuchPolicy'", "CnnPolicy"]),
    ("buffer too big for RAM", dict(buffer_size=100_000_000, replay_buffer_class=None), [],
     ["needs 5646.8 GB", "available", "FrameStackReplayBuffer"]),
    ("n_steps beside a buffer class", dict(n_steps=3), [], ["n_steps=3", "replay_buffer_kwargs"]),
    ("n-step gamma mismatch", dict(replay_buffer_kwargs="dict(n_steps=3, gamma=0.9)"), [],
     ["gamma=0.9", "gamma=0.99"]),
    ("bad thread count", {}, ["--num-threads", "many"], ["--num-threads='many'", "auto, an integer >= 1"]),
    ("log folder not writable", {}, ["-f", "a_file/logs"], ["log folder 'a_file/logs' cannot be written"]),
    ("resume without run", {}, ["--resume", "logs/dqn/nothing_1"], ["not a run folder"]),
]


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


@pytest.mark.parametrize("case, overrides, extra, words", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_before_anything_is_written(case, overrides, extra, words, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "logs" / "dqn" / f"{ENV}_1").mkdir(parents=True)  # an earlier run that must stay as it is
    (tmp_path / "logs" / "dqn" / f"{ENV}_1" / "0.monitor.csv").write_text("#\nr,l,t\n1.0,100,1.0\n")
    if overrides == "broken":
        conf = tmp_path / "conf.yml"
        conf.write_text(f"{ENV}:\n  gamma: [0.99\n")
    else:
        entry = small_entry(**(overrides or {}))
        entry = {k: v for k, v in entry.items() if v is not None}
        conf = write_conf(tmp_path, entry)
    before = snapshot(tmp_path)
    status = train.main(["-conf", str(conf), "-f", "logs", "-n", "100", "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0 and err.startswith("error: ")
    for word in words:
        assert word in err, (word, err)
    assert snapshot(tmp_path) == before


def test_a_linear_learning_rate_schedule_is_given_on_the_command_line_as_in_the_yaml(tmp_path, small_conf):
    """``-params learning_rate:lin_1e-3`` (RL Zoo's YAML form, no quotes): the run records the schedule and
    the optimiser's rate decays linearly with the run's progress, to 0 at its last step."""
    result = run(["-m", "sb3_breakout.train", "-conf", str(small_conf), "-f", "logs", "-n", "800", "--seed", "0",
                  "--no-progress", "--num-threads", "1", "-params", "learning_rate:lin_1e-3", "learning_starts:100"],
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    config = yaml.safe_load((run_dir / ENV / "config.yml").read_text())
    assert config["learning_rate"] == "lin_1e-3"
    model = DQN.load(run_dir / f"{ENV}.zip", device="cpu")
    assert model.lr_schedule(1.0) == pytest.approx(1e-3) and model.lr_schedule(0.5) == pytest.approx(5e-4)
    rate = model.policy.optimizer.param_groups[0]["lr"]
    assert rate < 1e-5  # set at the last update, where the progress left is 0: a constant rate would be 1e-3


def test_unknown_env_id_is_a_one_line_error(tmp_path):
    """An entry exists for the id, but gymnasium has no such env: refused before the run folder is made."""
    conf = tmp_path / "conf.yml"
    conf.write_text(yaml.safe_dump({"BreakoutNoFrameskip-v9": small_entry()}))
    result = run(["-m", "sb3_breakout.train", "-conf", str(conf), "--env", "BreakoutNoFrameskip-v9", "-f", "logs"],
                 cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown env id 'BreakoutNoFrameskip-v9'" in result.stderr
    assert not (tmp_path / "logs").exists()


def test_missing_roms_are_a_one_line_error(tmp_path):
    empty = tmp_path / "roms"
    empty.mkdir()
    result = run(["-m", "sb3_breakout.train", "-f", "logs", "-n", "100"], cwd=tmp_path,
                 env_extra={"ALE_ROMS_DIR": str(empty)})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Atari ROM" in lines[0] and "breakout.bin" in lines[0]
    assert not (tmp_path / "logs").exists()


def test_diverging_training_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # Adam steps of ~1e30: the first updates (from step 200) make the network overflow
    conf = write_conf(tmp_path, small_entry(learning_rate=1e30, learning_starts=200))
    result = run(["-m", "sb3_breakout.train", "-conf", str(conf), "-f", "logs", "-n", "2000", "--save-freq", "40",
                  "--seed", "0", "--num-threads", "1"], cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "not finite" in result.stderr or "loss became" in result.stderr
    checkpoints = list((tmp_path / "logs" / "dqn" / f"{ENV}_1" / "checkpoints").glob("step_*"))
    assert checkpoints and all(int(c.name[5:]) <= 200 for c in checkpoints)
    for checkpoint in checkpoints:
        model = DQN.load(checkpoint / "model.zip", device="cpu")
        assert all(bool(p.isfinite().all()) for p in model.policy.parameters())


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU (runs on a machine with one)")
def test_trains_on_the_gpu_and_resumes_on_the_cpu(tmp_path, small_conf):
    """``--device auto`` takes the GPU; its checkpoint (optimizer and replay buffer too) resumes on a CPU."""
    run_dir = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    first = run(["-m", "sb3_breakout.train", "-conf", str(small_conf), "-f", "logs", "-n", "800",
                 "--save-freq", "400", "--seed", "1", "--no-progress"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "PyTorch device: cuda" in first.stdout
    resumed = run(["-m", "sb3_breakout.train", "--resume", str(run_dir), "-n", "1200", "--device", "cpu",
                   "--no-progress"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "PyTorch device: cpu" in resumed.stdout and "from step_800: step 800 of 1200" in resumed.stdout
    model = DQN.load(run_dir / f"{ENV}.zip", device="cpu")
    assert model.num_timesteps == 1200 and next(model.q_net.parameters()).device.type == "cpu"
