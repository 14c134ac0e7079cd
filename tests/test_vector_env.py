"""
The ale backend (ALE's own C++ vector env behind SB3's VecEnv) against the Python deepmind profile,
on the real game.
"""

import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from stable_baselines3.common.atari_wrappers import MaxAndSkipEnv, WarpFrame

from conftest import ENV, run_cli, small_entry, write_conf
from sb3_breakout.envs import make_breakout_env
from sb3_breakout.plot import load_run
from sb3_breakout.vector_env import AleVecEnv


def test_same_frames_rewards_and_ends_as_the_python_profile():
    """
    One whole random game, step by step, from the same emulator state: ALE's reset (FIRE for one
    frame, no no-ops) replayed on a gymnasium env, then the deepmind profile's frame pieces (SB3's
    MaxAndSkipEnv and WarpFrame). Frames, rewards, lost lives and the game's end are identical.
    """
    actions = np.random.default_rng(0).integers(0, 4, size=3000)
    ale = AleVecEnv(1, profile="deepmind", seeds=[0], noop_max=0, num_threads=1)
    frame = ale.reset()[0, 0]
    raw = gym.make(ENV, max_episode_steps=None)
    raw.reset(seed=0)
    first, *_ = raw.step(1)
    python = WarpFrame(MaxAndSkipEnv(raw, skip=4))
    assert np.array_equal(python.observation(first)[..., 0], frame)
    lives, score, steps = 5, 0.0, 0
    for action in actions:
        p_frame, p_reward, p_term, _, p_info = python.step(int(action))
        obs, reward, done, infos = ale.step(np.array([action]))
        steps += 1
        score += p_reward
        lost = p_info["lives"] < lives
        lives = p_info["lives"]
        a_frame = infos[0]["terminal_observation"][0] if done[0] else obs[0, 0]
        assert np.array_equal(p_frame[..., 0], a_frame), steps
        assert done[0] == (lost or p_term), steps  # a lost life ends the learning episode
        assert reward[0] == (-1.0 if done[0] else np.sign(p_reward)), steps  # clipped, penalty at the end
        if p_term:
            assert infos[0]["episode"]["r"] == score  # the true game score
            break
    ale.close()
    assert p_term and steps > 100, "a random game ends within 3000 steps"


def test_monitor_files_true_scores_truncation_and_terminal_obs(tmp_path):
    env = make_breakout_env("deepmind", n_envs=2, seed=3, monitor_dir=str(tmp_path), max_agent_steps=150,
                            backend="ale", num_threads=1)
    obs = env.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    games, truncated, life_losses = [], 0, 0
    lives = np.full(2, 5)
    for _ in range(1000):
        obs, rewards, dones, infos = env.step(rng.integers(0, 4, size=2))
        for i, info in enumerate(infos):
            if dones[i]:
                assert info["terminal_observation"].shape == (4, 84, 84)
                if info.get("TimeLimit.truncated"):
                    truncated += 1
                    assert rewards[i] != -1.0  # a cut game is not a failure: no penalty
                else:
                    assert rewards[i] == -1.0
                    life_losses += info["lives"] < lives[i]
                assert not obs[i, :3].any()  # the stack restarts (VecFrameStack) at every end
            if "episode" in info:
                games.append(info["episode"])
                # the cap counts frames from the end of ALE's reset (up to 30 no-op frames and a FIRE before)
                assert info["episode"]["l"] <= 150 * 4 + 31
            lives[i] = info["lives"]
    env.close()
    assert truncated and life_losses and games
    files = sorted(p.name for p in tmp_path.glob("*.monitor.csv"))
    assert files == ["0.monitor.csv", "1.monitor.csv"]
    header = json.loads((tmp_path / "0.monitor.csv").read_text().splitlines()[0][1:])
    assert header["env_id"] == ENV and "t_start" in header
    rows = pd.concat([pd.read_csv(tmp_path / f, skiprows=1) for f in files])
    assert len(rows) == len(games) and (rows["r"] >= 0).all()  # raw scores, never the penalty
    assert sorted(rows["r"]) == sorted(g["r"] for g in games)


def test_yaml_entry_with_the_ale_backend_trains(tmp_path):
    entry = small_entry(n_envs=2, target_update_interval=400,
                        vec_env_wrapper=[{"sb3_breakout.vector_env.ale_vector_backend": {"num_threads": 1}}])
    conf = write_conf(tmp_path, entry)
    result = run_cli(["-m", "sb3_breakout.train", "-conf", str(conf), "-n", "1200", "--seed", "0", "-f", "logs",
                      "--num-threads", "1", "--save-freq", "0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "logs" / "dqn" / f"{ENV}_1"
    n_games = 0
    for i in range(2):  # RL Zoo's layout: one Monitor file per game, header once, then the games
        lines = (run / f"{i}.monitor.csv").read_text().splitlines()
        n_games += len(lines) - 2
        assert lines[0].startswith("#{") and lines[1] == "r,l,t" and len(lines) > 2
        assert not any(line.startswith("#") for line in lines[1:])
    curve = load_run(run)  # plot reads the run as any other
    assert len(curve.scores) == n_games and (curve.scores >= 0).all()


def test_bad_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        make_breakout_env(backend="gpu")
