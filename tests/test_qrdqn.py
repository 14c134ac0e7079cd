"""
QR-DQN (sb3-contrib) everywhere DQN goes: the same pieces, its own YAML, trained by both trainers,
watched by RL Zoo, evaluated, recorded, plotted beside DQN, resumed after SIGKILL and tuned.
Real processes, the real game, real files.
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml
from sb3_contrib import QRDQN
from stable_baselines3 import DQN

from conftest import ENV, run_cli, small_entry, write_conf
from sb3_breakout import config as cfg
from sb3_breakout import plot, runs
from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.checkpoint_files import list_checkpoints
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.torch_layers import NatureCNN, nature_policy_kwargs

QR_PARAMETERS = 2_094_528  # NatureCNN (1,684,128) + Linear(512, 4 actions x 200 quantiles)


def n_parameters(model) -> int:
    net = model.quantile_net if isinstance(model, QRDQN) else model.q_net
    return sum(p.numel() for p in net.parameters())


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a run folder without its checkpoints (the shared fixtures stay read-only)."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("checkpoints"))
    return dest


def assert_yaml_optimizer(model, eps: float) -> None:
    """The YAML's Adam, not the one sb3-contrib puts in place of optimizer_kwargs given without a class."""
    defaults = model.policy.optimizer.defaults
    assert type(model.policy.optimizer) is th.optim.Adam
    assert (defaults["eps"], defaults["fused"]) == (eps, True), defaults


# ------------------------------------------------------------------------------- the network
def test_nature_policy_kwargs_give_the_notebooks_network_for_both_algorithms():
    env = make_breakout_env("deepmind", seed=0)
    assert n_parameters(DQN("CnnPolicy", env, buffer_size=10, policy_kwargs=nature_policy_kwargs())) == 1_686_180
    qr = QRDQN("CnnPolicy", env, buffer_size=10, policy_kwargs=nature_policy_kwargs(n_quantiles=200))
    assert n_parameters(qr) == QR_PARAMETERS and isinstance(qr.policy.quantile_net.features_extractor, NatureCNN)
    # the trap the helper avoids: SB3 and sb3-contrib add [64, 64] after any other extractor than theirs
    plain = dict(features_extractor_class=NatureCNN)
    assert n_parameters(DQN("CnnPolicy", env, buffer_size=10, policy_kwargs=plain)) == 1_721_380
    assert n_parameters(QRDQN("CnnPolicy", env, buffer_size=10, policy_kwargs=plain)) == 1_773_120
    env.close()


def test_yaml_entries_are_the_dqn_recipe_with_the_quantile_head():
    for profile in ("deepmind", "keras", "fast"):
        qr = cfg.load_entry(cfg.default_config("qrdqn"), ENV, profile)
        cfg.validate_entry(qr, "qrdqn")
        dqn = cfg.load_entry(cfg.default_config("dqn"), ENV, profile)
        for key in ("policy", "env_wrapper", "frame_stack", "env_kwargs", "replay_buffer_class", "batch_size",
                    "gamma", "train_freq", "target_update_interval"):
            if (profile, key) == ("fast", "train_freq"):  # QR-DQN fast: half DQN's updates (docs/results.md)
                assert qr[key] == 2 * dqn[key]
                continue
            assert qr[key] == dqn[key], (profile, key)
        assert "n_quantiles=200" in qr["policy_kwargs"] and "net_arch=[]" in qr["policy_kwargs"]
        if profile != "fast":
            assert qr["callback"][0] == dqn["callback"][0]  # the same epsilon schedule
    fast = cfg.load_entry(cfg.default_config("qrdqn"), ENV, "fast")
    # QR-DQN fast: epsilon 0.01 by step 100k (docs/results.md), DQN fast keeps Dopamine's 250k
    assert fast["callback"][0] == {"sb3_breakout.callbacks.LinearEpsilonCallback": dict(
        random_steps=20_000, decay_steps=100_000, initial_eps=1.0, final_eps=0.01)}
    assert fast["max_grad_norm"] is None and "eps=0.01 / 32" in fast["policy_kwargs"]
    assert fast["replay_buffer_kwargs"] == "dict(n_steps=3, gamma=0.99)"
    # four times the notebooks' step for half the updates: 1e-3 falling to 0 over the preset's 1M steps
    assert fast["learning_rate"] == "lin_1e-3" and fast["n_timesteps"] == 1e6
    # the IMPALA network since 2026-12-03: about half the agent steps to 40 (docs/results.md)
    assert "torch_layers').ImpalaCNN" in fast["policy_kwargs"]


def test_fast_nature_entry_is_the_fast_entry_with_the_nature_network():
    fast = cfg.load_entry(cfg.default_config("qrdqn"), ENV, "fast")
    nature = cfg.load_entry(cfg.default_config("qrdqn"), ENV, "fast-nature")
    cfg.validate_entry(nature, "qrdqn")
    assert {key for key in fast.keys() | nature.keys() if fast.get(key) != nature.get(key)} == {"policy_kwargs"}
    assert nature["policy_kwargs"] == fast["policy_kwargs"].replace("').ImpalaCNN", "').NatureCNN")


# ---------------------------------------------------------------------------- train and watch
def test_tiny_qrdqn_run_is_found_and_loaded_like_a_dqn_run(tiny_qrdqn_run):
    target = runs.resolve_target(str(tiny_qrdqn_run))
    assert target.algo == "qrdqn" and (target.profile, target.preprocessing) == ("deepmind", "deepmind")
    model = runs.load_model(target, device="cpu")
    assert isinstance(model, QRDQN) and model.num_timesteps == 2000
    assert type(model).__module__ == "sb3_breakout.qrdqn"  # this package's class (its quantile loss)
    assert n_parameters(model) == QR_PARAMETERS
    assert_yaml_optimizer(model, eps=1e-8)
    assert [c.name for c in list_checkpoints(tiny_qrdqn_run)] == ["step_1000", "step_2000"]
    checkpoint = runs.resolve_target(str(tiny_qrdqn_run), load_checkpoint=1000)
    assert runs.load_model(checkpoint, device="cpu").num_timesteps == 1000


def test_rl_zoo_trains_enjoys_and_records_qrdqn(tiny_qrdqn_run, tmp_path):
    conf = cfg.default_config("qrdqn")
    zoo = run_cli(["-m", "rl_zoo3.train", "--algo", "qrdqn", "--env", ENV, "-conf", str(conf), "-n", "300",
                   "--seed", "0", "-f", "zoo", "--eval-freq", "-1", "--num-threads", "1",
                   "-params", "buffer_size:1000"], cwd=tmp_path)
    assert zoo.returncode == 0, zoo.stderr[-3000:]
    model = QRDQN.load(tmp_path / "zoo" / "qrdqn" / f"{ENV}_1" / f"{ENV}.zip", device="cpu")
    assert n_parameters(model) == QR_PARAMETERS and isinstance(model.replay_buffer, FrameStackReplayBuffer)
    assert_yaml_optimizer(model, eps=1e-8)  # RL Zoo's trainer builds sb3-contrib's class: the same optimizer

    log_folder = tiny_qrdqn_run.parent.parent
    enjoy = run_cli(["-m", "rl_zoo3.enjoy", "--algo", "qrdqn", "--env", ENV, "-f", str(log_folder), "--exp-id",
                     "1", "--no-render", "-n", "1000", "--gym-packages", "sb3_breakout"], cwd=tmp_path)
    assert enjoy.returncode == 0, enjoy.stderr[-3000:]
    assert "Atari Episode Score" in enjoy.stdout
    video = run_cli(["-m", "rl_zoo3.record_video", "--algo", "qrdqn", "--env", ENV, "-f", str(log_folder),
                     "--exp-id", "1", "-n", "200", "-o", str(tmp_path / "video")], cwd=tmp_path)
    assert video.returncode == 0, video.stderr[-3000:]
    assert len(list((tmp_path / "video").glob("*.mp4"))) == 1


# --------------------------------------------------------------------- evaluate, record, plot
def test_evaluate_record_and_plot_take_a_log_folder_of_both_algorithms(tiny_run, tiny_qrdqn_run, tmp_path):
    logs = tmp_path / "logs"
    dqn_run = copy_run(tiny_run, logs / "dqn" / f"{ENV}_1")
    qr_run = copy_run(tiny_qrdqn_run, logs / "qrdqn" / f"{ENV}_1")
    # the QR-DQN run was trained last (its config.yml is the newest) ...
    os.utime(dqn_run / ENV / "config.yml", (1_000_000, 1_000_000))
    assert runs.resolve_target(str(logs)).run_dir == qr_run
    assert runs.resolve_target(str(logs), algo="dqn").run_dir == dqn_run  # ... unless --algo says
    os.utime(qr_run / ENV / "config.yml", (500_000, 500_000))
    assert runs.resolve_target(str(logs)).run_dir == dqn_run

    for algo, run in (("qrdqn", qr_run), ("dqn", dqn_run)):
        out = tmp_path / f"{algo}.json"
        result = run_cli(["-m", "sb3_breakout.evaluate", str(logs), "--algo", algo, "--games", "2",
                          "--max-frames", "2000", "-o", str(out)], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        data = json.loads(out.read_text())
        assert data["algo"] == algo and len(data["games"]) == 2
        assert data["run"] == str(run.relative_to(tmp_path))  # below the working folder: relative, as shipped

    gif = tmp_path / "qr.gif"
    result = run_cli(["-m", "sb3_breakout.record", str(qr_run), "--games", "1", "--max-frames", "400",
                      "-o", str(gif)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert gif.stat().st_size > 1000

    # one figure with both runs and two published curves of 10M steps (the columns of
    # docs/reference/zoo_*_breakout_curve.csv); the x axis follows the runs (a 2,000-step run is not
    # squeezed against 10M steps of reference), the references cut to it
    references = []
    for name, final in (("zoo_dqn", 307.0), ("zoo_qrdqn", 422.0)):
        path = tmp_path / f"{name}.csv"
        steps = np.linspace(0, 10_000_000, 1001)
        path.write_text("steps,score\n" + "".join(f"{x:.0f},{1.2 + final * x / 1e7:.2f}\n" for x in steps))
        references += ["--reference", str(path)]
    out = tmp_path / "both.png"
    result = run_cli(["-m", "sb3_breakout.plot", f"DQN={dqn_run}", f"QR-DQN={qr_run}", *references, "-o", str(out)],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    last = max(plot.load_run(run).steps[-1] for run in (dqn_run, qr_run))
    assert f"(x axis: 0 to {last:,.0f} agent steps)" in result.stdout
    assert "DQN: " in result.stdout and "QR-DQN: " in result.stdout


# ------------------------------------------------------------------------------ resume
def test_qrdqn_sigkill_then_resume_continues_exactly(tmp_path):
    entry = small_entry()
    entry.update(policy_kwargs=cfg.load_entry(cfg.default_config("qrdqn"), ENV)["policy_kwargs"])
    conf = write_conf(tmp_path, entry)
    run_dir = tmp_path / "logs" / "qrdqn" / f"{ENV}_1"
    proc = subprocess.Popen([sys.executable, "-m", "sb3_breakout.train", "--algo", "qrdqn", "-conf", str(conf),
                             "-f", "logs", "--seed", "3", "-n", "1500", "--save-freq", "300", "--num-threads", "1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not any(p.name == "step_600" for p in list_checkpoints(run_dir)):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    checkpoint = list_checkpoints(run_dir)[-1]
    step = int(checkpoint.name[5:])
    saved = QRDQN.load(checkpoint / "model.zip", device="cpu")
    with open(checkpoint / "state.pkl", "rb") as f:
        games_at_checkpoint = pickle.load(f)["running_reward"]["episode_count"]
    with open(checkpoint / "replay_buffer.pkl", "rb") as f:  # rotated away by the resumed run's checkpoints
        before = pickle.load(f)

    resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "--num-threads", "1"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"from step_{step}: step {step} of 1500" in resumed.stdout
    final = QRDQN.load(run_dir / f"{ENV}.zip", device="cpu")
    assert final.num_timesteps == 1500 and final._n_calls == 1500  # step count, target-update phase
    assert final.exploration_rate == pytest.approx(max(0.1, 1.0 - 0.9 * 1500 / 2000))  # epsilon goes on
    # Adam's state came back: its step count is every update since the start, not since the resume
    adam_steps = {int(s["step"]) for s in final.policy.optimizer.state_dict()["state"].values()}
    assert adam_steps == {final._n_updates} and final._n_updates > saved._n_updates > 0
    last_line = [line for line in resumed.stdout.splitlines() if line.startswith("running reward")][-1]
    episodes = int(last_line.split(" at episode ")[1].split(",")[0])
    monitor_games = len((run_dir / "0.monitor.csv").read_text().splitlines()) - 2
    assert episodes == monitor_games > games_at_checkpoint  # the running reward's count goes on
    with open(list_checkpoints(run_dir)[-1] / "replay_buffer.pkl", "rb") as f:
        buffer = pickle.load(f)
    assert buffer.pos == 1500 and before.pos == step
    np.random.seed(0)
    a = before._get_samples(np.arange(step - 1))
    np.random.seed(0)
    b = buffer._get_samples(np.arange(step - 1))
    for field in ("observations", "actions", "next_observations", "dones", "rewards"):
        th.testing.assert_close(getattr(a, field), getattr(b, field), msg=field)


def test_a_run_whose_yaml_gave_adam_keywords_without_the_class_still_resumes(tiny_qrdqn_run, tmp_path):
    # runs trained before qrdqn.yml named optimizer_class: a new run of that YAML is refused
    # (test_bad_input), a run on disk resumes with the optimizer its checkpoint saved
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_qrdqn_run, run_dir)
    config = run_dir / ENV / "config.yml"
    entry = yaml.safe_load(config.read_text())
    old_style = entry["policy_kwargs"].replace("optimizer_class=importlib.import_module('torch.optim').Adam,", "")
    assert old_style != entry["policy_kwargs"] and "optimizer_kwargs" in old_style
    config.write_text(yaml.safe_dump({**entry, "policy_kwargs": old_style}))
    resumed = run_cli(["-m", "sb3_breakout.train", "--resume", str(run_dir), "-n", "2200", "--num-threads", "1"],
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = QRDQN.load(run_dir / f"{ENV}.zip", device="cpu")
    assert final.num_timesteps == 2200
    assert_yaml_optimizer(final, eps=1e-8)  # the checkpoint's optimizer, not sb3-contrib's replacement


# ------------------------------------------------------------------------- n-step returns
def _train_qrdqn(n_steps_kwargs: dict, seed: int = 5) -> QRDQN:
    env = make_breakout_env("deepmind", seed=seed)
    model = QRDQN("CnnPolicy", env, buffer_size=3000, learning_starts=100, batch_size=32, train_freq=4,
                  target_update_interval=200, learning_rate=1e-3, seed=seed, device="cpu",
                  policy_kwargs=nature_policy_kwargs(n_quantiles=20), **n_steps_kwargs)
    model.learn(500)
    env.close()
    return model


def test_compact_n_step_buffer_trains_qrdqn_as_sb3s_n_step_buffer():
    """
    QR-DQN reads ``replay_data.discounts``: with the same seed, the compact buffer's 3-step samples
    and SB3's ``NStepReplayBuffer`` (QR-DQN's own ``n_steps=3``) give the same batches, so the two
    trainings end with the same weights; 1-step returns give other weights (the test can fail).
    """
    th.set_num_threads(1)
    sb3 = _train_qrdqn(dict(n_steps=3))
    ours = _train_qrdqn(dict(replay_buffer_class=FrameStackReplayBuffer,
                             replay_buffer_kwargs=dict(n_steps=3, gamma=0.99)))
    one_step = _train_qrdqn(dict(replay_buffer_class=FrameStackReplayBuffer))
    assert type(sb3.replay_buffer).__name__ == "NStepReplayBuffer" and sb3._n_updates == ours._n_updates > 90
    for (name, a), b in zip(sb3.policy.state_dict().items(), ours.policy.state_dict().values(), strict=True):
        assert th.equal(a, b), name
    assert any(not th.equal(a, c) for a, c in zip(sb3.policy.state_dict().values(),
                                                  one_step.policy.state_dict().values(), strict=True))


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, words", [
    (["--algo", "a2c"], "--algo 'a2c' is not allowed: choose one of dqn, qrdqn"),
    (["--algo", "qrdqn", "-params", "policy_kwargs:dict(n_quantiles=0)"],
     "n_quantiles=0 is not allowed: must be an integer >= 1"),
    (["--algo", "dqn", "-params", "policy_kwargs:dict(n_quantiles=50)"],
     "policy_kwargs 'n_quantiles' is not taken by dqn's"),
    (["--algo", "qrdqn", "-conf", "hyperparams/dqn.yml", "--profile", "nope"], "no entry"),
])
def test_bad_algorithm_input_is_one_line_and_writes_nothing(argv, words, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    argv = [str(repo / a) if a.startswith("hyperparams/") else a for a in argv]
    result = run_cli(["-m", "sb3_breakout.train", *argv, "-n", "100", "-f", str(tmp_path / "logs")], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert words in result.stderr and not (tmp_path / "logs").exists()


# ------------------------------------------------------------------------------------ tune
def test_tune_qrdqn_samples_n_quantiles_and_its_best_yml_trains_with_both_trainers(tmp_path):
    space = tmp_path / "space.yml"
    space.write_text("buffer_size: 1000\nbatch_size: 32\nrandom_steps: 100\ndecay_steps: 500\n"
                     "target_update_interval: 200\ntrain_freq: 4\ngradient_steps: 1\nn_quantiles: [10, 20]\n")
    result = run_cli(["-m", "sb3_breakout.tune", "--algo", "qrdqn", "-n", "300", "--n-trials", "2",
                      "--n-evaluations", "1", "--eval-episodes", "1", "--eval-max-frames", "800",
                      "--search-space", str(space), "-f", "logs", "--num-threads", "1", "--seed", "0",
                      "--pruner", "none"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "logs" / f"qrdqn_{ENV}"
    best_yml = out / "best.yml"
    entry = cfg.load_entry(best_yml, ENV)
    cfg.validate_entry(entry, "qrdqn")
    import optuna

    study = optuna.load_study(study_name=f"qrdqn_{ENV}", storage=f"sqlite:///{tmp_path / 'logs' / 'optuna.db'}")
    tuned = study.best_trial.params["n_quantiles"]
    assert tuned in (10, 20) and f"n_quantiles={tuned}" in entry["policy_kwargs"]
    assert "--algo qrdqn" in best_yml.read_text()
    trial_configs = [yaml.load(p.read_text(), Loader=yaml.UnsafeLoader) for p in out.glob(f"trials/*/{ENV}/config.yml")]
    assert {("n_quantiles=10" in c["policy_kwargs"]) or ("n_quantiles=20" in c["policy_kwargs"])
            for c in trial_configs} == {True}

    ours = run_cli(["-m", "sb3_breakout.train", "--algo", "qrdqn", "-conf", str(best_yml), "-n", "200", "--seed", "0",
                    "-f", "runs", "--num-threads", "1"], cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr[-3000:]
    model = QRDQN.load(tmp_path / "runs" / "qrdqn" / f"{ENV}_1" / f"{ENV}.zip", device="cpu")
    assert model.policy.n_quantiles == tuned
    zoo = run_cli(["-m", "rl_zoo3.train", "--algo", "qrdqn", "--env", ENV, "--conf-file", str(best_yml), "-n", "200",
                   "--seed", "0", "-f", "zoo", "--eval-freq", "-1", "--num-threads", "1"], cwd=tmp_path)
    assert zoo.returncode == 0, zoo.stderr[-3000:]
    # a DQN study refuses the QR-DQN-only parameter before anything is written
    dqn = run_cli(["-m", "sb3_breakout.tune", "-n", "300", "--search-space", str(space), "-f", "dqn_logs"],
                  cwd=tmp_path)
    assert dqn.returncode == 2 and "n_quantiles" in dqn.stderr and not (tmp_path / "dqn_logs").exists()
