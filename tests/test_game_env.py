"""The whole-game env of evaluate and record: seeded games replay exactly, the no-op reset and the frame cap."""

import gymnasium as gym
import numpy as np
import pytest

from sb3_breakout import runs
from sb3_breakout.game_env import GameSeeder, make_game_env, set_noop_max


def seeder_of(venv) -> GameSeeder:
    inner = venv.envs[0]
    while not isinstance(inner, GameSeeder):
        inner = inner.env
    return inner


def play_game(venv, first_obs: np.ndarray, steps: int = 400) -> tuple[list[bytes], float, np.ndarray]:
    """One game of fixed actions from ``first_obs``: its frames, its score, and the next game's first frame."""
    frames = [first_obs.tobytes()]
    actions = np.random.default_rng(0).integers(0, venv.action_space.n, size=steps)
    for action in actions:
        obs, _, dones, infos = venv.step(np.array([action]))
        if dones[0] and "episode" in infos[0]:  # a whole game ended; obs is the next game's first frame
            return frames, float(infos[0]["episode"]["r"]), obs
        frames.append(obs.tobytes())
    raise AssertionError(f"no game ended within {steps} steps")


def test_a_seed_queued_during_a_game_starts_the_next_game_as_a_fresh_env_would(tiny_run):
    """What evaluate relies on: game i is the same game whichever env slot plays it, and when."""
    target = runs.resolve_target(str(tiny_run))
    fresh = make_game_env(target, max_frames=1200)  # 300 agent steps: the cap ends every game
    seeder_of(fresh).queue_seed(7)
    seven, seven_score, _ = play_game(fresh, fresh.reset())
    fresh.close()

    busy = make_game_env(target, max_frames=1200)
    seeder_of(busy).queue_seed(3)
    three, _, next_first = play_game(busy, busy.reset())
    seeder_of(busy).queue_seed(7)  # too late for the game already restarted: it seeds the one after
    _, _, next_first = play_game(busy, next_first)
    seven_again, seven_again_score, _ = play_game(busy, next_first)
    busy.close()

    assert seven_again == seven and seven_again_score == seven_score
    assert three != seven  # another seed: another number of no-ops, another game


def test_noop_max_is_set_in_the_chain_or_refused_where_there_is_none(tiny_run):
    venv = make_game_env(runs.resolve_target(str(tiny_run)), noop_max=5)
    inner, found = venv.envs[0], []
    while isinstance(inner, gym.Wrapper):
        if hasattr(inner, "noop_max"):
            found.append(inner.noop_max)
        inner = inner.env
    venv.close()
    assert found == [5]
    bare = gym.make("BreakoutNoFrameskip-v4")
    assert set_noop_max(bare, 30) is bare  # the profiles' value: nothing to change
    with pytest.raises(ValueError, match="noop_max=5: the env's wrappers have no no-op reset"):
        set_noop_max(bare, 5)
    bare.close()
