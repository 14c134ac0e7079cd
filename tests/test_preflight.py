"""sb3_breakout.preflight: the checks train and tune run before anything is written."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.buffers import ReplayBuffer

from sb3_breakout import preflight
from sb3_breakout.buffers import FrameStackReplayBuffer
from sb3_breakout.config import ConfigError


@pytest.mark.parametrize("n_envs", [1, 4])
@pytest.mark.parametrize("buffer_class", [None, "importlib.import_module('sb3_breakout.buffers')"
                                                ".FrameStackReplayBuffer"])
def test_the_ram_check_counts_the_buffer_the_learner_allocates(n_envs, buffer_class):
    """The bytes the RAM check expects are those of the buffer SB3 builds, whatever the number of games
    (SB3 splits ``buffer_size`` among them; it does not multiply it)."""
    entry = {"buffer_size": 1000, "n_envs": n_envs, "replay_buffer_class": buffer_class}
    expected, name = preflight.replay_buffer_nbytes(entry, (84, 84, 4))
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    cls = FrameStackReplayBuffer if buffer_class else ReplayBuffer
    buffer = cls(1000, space, gym.spaces.Discrete(4), n_envs=n_envs)
    allocated = sum(v.nbytes for v in vars(buffer).values() if isinstance(v, np.ndarray))
    assert name == cls.__name__
    assert abs(expected - allocated) <= 0.01 * allocated, (expected, allocated)


@pytest.mark.parametrize("text, threads", [("auto", "auto"), (" AUTO ", "auto"), ("2", 2), ("-1", -1)])
def test_num_threads_takes_auto_a_count_or_torch_default(text, threads):
    assert preflight.parse_threads(text) == threads


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5", ""])
def test_num_threads_refuses_the_rest_naming_the_value(text):
    with pytest.raises(ConfigError, match=f"--num-threads={text!r} is not allowed: auto, an integer >= 1"):
        preflight.parse_threads(text)


def test_a_log_folder_is_checked_without_being_created(tmp_path):
    new = tmp_path / "a" / "b" / "logs"
    preflight.check_writable(str(new))
    assert not (tmp_path / "a").exists()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match="log folder .*a_file/logs' cannot be written"):
        preflight.check_writable(str(tmp_path / "a_file" / "logs"))
