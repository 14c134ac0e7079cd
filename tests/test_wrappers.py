"""The terminal penalty and the two profiles, on the real ALE Breakout."""

import gymnasium as gym
import pytest
from stable_baselines3.common.monitor import Monitor

import sb3_breakout  # noqa: F401  (registers the ALE envs)
from sb3_breakout.wrappers import TerminalPenaltyWrapper, breakout_preprocessing


def play(env, n_steps, seed=0):
    """Random play; returns the list of (reward, terminated, truncated, lives) of every step."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    steps = []
    for _ in range(n_steps):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps.append((float(reward), terminated, truncated, info.get("lives")))
        if terminated or truncated:
            env.reset()
    return steps


def test_deepmind_profile_penalises_every_life_loss():
    env = breakout_preprocessing(Monitor(gym.make("BreakoutNoFrameskip-v4")), profile="deepmind")
    steps = play(env, 1500)
    terminal = [s for s in steps if s[1]]
    assert len(terminal) >= 5, "random play should lose several lives in 1500 steps"
    assert all(r == -1.0 for r, *_ in terminal)
    # a terminal step is a life loss: the lives counter drops there
    assert {lives for _, term, _, lives in steps if term} <= {0, 1, 2, 3, 4}
    # clipped rewards elsewhere
    assert {r for r, term, _, _ in steps if not term} <= {0.0, 1.0}
    env.close()


def test_keras_profile_penalises_only_game_over_and_keeps_raw_scores():
    env = breakout_preprocessing(Monitor(gym.make("BreakoutNoFrameskip-v4")), profile="keras")
    steps = play(env, 1500)
    terminal = [s for s in steps if s[1]]
    assert terminal, "random play should finish a game in 1500 steps"
    assert all(r == -1.0 and lives == 0 for r, _, _, lives in terminal)
    assert env.observation_space.shape == (84, 84, 1)
    env.close()


@pytest.mark.parametrize("profile", ["deepmind", "keras"])
def test_truncated_only_step_keeps_its_reward(profile):
    # 120 emulator frames = 30 agent steps: the time limit cuts the game while the ball is in play
    env = breakout_preprocessing(gym.make("BreakoutNoFrameskip-v4", max_episode_steps=120), profile=profile)
    steps = play(env, 200)
    truncated = [s for s in steps if s[2] and not s[1]]
    assert truncated
    assert all(r >= 0.0 for r, *_ in truncated)
    env.close()


def test_penalty_is_configurable_and_only_on_terminated():
    env = TerminalPenaltyWrapper(gym.make("BreakoutNoFrameskip-v4"), penalty=-5.0)
    steps = play(env, 3000)
    assert [r for r, term, *_ in steps if term] and all(r == -5.0 for r, term, *_ in steps if term)
    assert all(r >= 0 for r, term, *_ in steps if not term)
    env.close()


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="'atari2600'.*deepmind, keras"):
        breakout_preprocessing(gym.make("BreakoutNoFrameskip-v4"), profile="atari2600")
