"""sb3_breakout: the DeepMind Nature DQN on Atari Breakout as a Stable-Baselines3 / RL Zoo extension.

Importing the package registers the ALE environments with gymnasium, so
``--gym-packages sb3_breakout`` is all RL Zoo's scripts need.
"""

import ale_py
import gymnasium as gym

gym.register_envs(ale_py)

__version__ = "0.1.0"
