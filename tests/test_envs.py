"""make_breakout_env: the VecEnv the learner sees, on the real game."""

import numpy as np
import pytest

from sb3_breakout.envs import make_breakout_env


@pytest.mark.parametrize("profile", ["deepmind", "keras"])
def test_stacked_channel_first_frames_and_true_scores(profile, tmp_path):
    env = make_breakout_env(profile, n_envs=2, seed=3, monitor_dir=str(tmp_path))
    obs = env.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    games = []
    for _ in range(2500):
        obs, rewards, dones, infos = env.step(rng.integers(0, 4, size=2))
        games += [info["episode"] for info in infos if "episode" in info]
    env.close()
    assert games, "random play finishes games within 2500 steps"
    # the Monitor sees whole games (5 lives) with raw, non-negative scores: never the penalty
    assert all(g["r"] >= 0 for g in games)
    monitor_files = sorted(p.name for p in tmp_path.glob("*.monitor.csv"))
    assert monitor_files == ["0.monitor.csv", "1.monitor.csv"]


def test_games_are_truncated_after_max_agent_steps():
    env = make_breakout_env("keras", seed=0, max_agent_steps=50)
    env.reset()
    lengths = []
    for _ in range(200):
        _, _, dones, infos = env.step(np.array([0]))  # NOOP: the ball is never launched
        lengths += [info["episode"]["l"] for info in infos if "episode" in info]
        if dones[0]:
            assert infos[0]["TimeLimit.truncated"]
    env.close()
    assert lengths and all(length <= 50 * 4 for length in lengths)  # Monitor counts emulator frames


def test_bad_profile_and_env_id_are_refused():
    with pytest.raises(ValueError, match="unknown profile 'foo'"):
        make_breakout_env("foo")
    with pytest.raises(ValueError, match="unknown env id 'BreakoutNoFrameskip-v9'"):
        make_breakout_env(env_id="BreakoutNoFrameskip-v9")
