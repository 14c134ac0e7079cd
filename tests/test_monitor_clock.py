"""
The Monitor clocks of both backends' envs are found under the VecEnv wrappers, read, and set so that a
resumed run's games write ``t`` on from the checkpoint's (the whole resume: test_checkpoint's SIGTERM test).
"""

import numpy as np
import pytest

from sb3_breakout import monitor_clock
from sb3_breakout.envs import make_breakout_env


def finish_a_game(venv) -> None:
    """Random play until a game ends (its Monitor row written)."""
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(20_000):
        _, _, _, infos = venv.step(rng.integers(0, 4, size=venv.num_envs))
        if any("episode" in info for info in infos):  # a game's end (a lost life ends an episode, not a game)
            return
    raise AssertionError("no game ended in 20,000 random steps")


@pytest.mark.parametrize("backend, clocks", [("python", 2), ("ale", 1)])
def test_a_resumed_clock_goes_on_from_the_saved_seconds(backend, clocks, tmp_path):
    venv = make_breakout_env(n_envs=2, seed=0, monitor_dir=str(tmp_path), backend=backend)
    try:
        assert len(monitor_clock.clocks(venv)) == clocks  # one per game, or ALE's one for both
        assert monitor_clock.resume(venv, [5_000.0] * clocks)
        assert all(5_000.0 <= s < 5_060.0 for s in monitor_clock.elapsed(venv))
        finish_a_game(venv)
    finally:
        venv.close()
    rows = [line.split(",") for f in sorted(tmp_path.glob("*.monitor.csv")) for line in f.read_text().splitlines()[2:]]
    assert rows and all(5_000.0 < float(t) < 5_600.0 for _, _, t in rows)


def test_a_checkpoint_without_clocks_leaves_them_as_they_are(tmp_path):
    venv = make_breakout_env(n_envs=2, seed=0, monitor_dir=str(tmp_path))
    try:
        before = [m.t_start for m in monitor_clock.clocks(venv)]
        assert not monitor_clock.resume(venv, None)  # a checkpoint written before the clocks were saved
        assert not monitor_clock.resume(venv, [5_000.0])  # another number of games
        assert [m.t_start for m in monitor_clock.clocks(venv)] == before
    finally:
        venv.close()
