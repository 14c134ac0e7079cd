"""
Parallel games (``n_envs > 1``) that keep the recipe's replay ratio and schedules in agent steps.

A YAML entry states its recipe as if one game were played: ``train_freq: 4, gradient_steps: 1`` is one
update of ``batch_size`` transitions every 4 transitions (agent steps), whatever ``n_envs`` is. SB3
counts ``train_freq`` in *vector* steps (one step of every game, ``n_envs`` transitions), so with 8
games the same numbers would mean one update per 32 transitions: 8 times fewer updates, a different
algorithm. :func:`per_vector_step` rewrites the two keys so that the number of updates per transition
stays the recipe's; RL Zoo then builds the model from the rewritten entry. The other schedules already
count agent steps (all games together) in SB3 and in this package, so they need nothing:

- epsilon: :class:`sb3_breakout.callbacks.LinearEpsilonCallback` reads ``num_timesteps``;
- learning starts: SB3 trains once ``num_timesteps > learning_starts``;
- target sync: SB3 syncs every ``target_update_interval // n_envs`` vector steps, which is
  ``target_update_interval`` agent steps when ``n_envs`` divides it (:func:`check_parallel` refuses
  an entry where it does not, rather than sync at a rounded interval);
- the running-reward log and the checkpoints fire when ``num_timesteps`` crosses a multiple of their
  period (:class:`sb3_breakout.callbacks.RunningRewardCallback`, :class:`sb3_breakout.checkpoint.CheckpointCallback`).

Acting is one batched forward pass for all games (SB3's ``predict`` on the stacked observations).

The saved ``config.yml`` keeps the entry as written (agent-step semantics), so a resumed run is
rewritten again in the same way and ``rl_zoo3`` tools read the recipe, not the rewritten numbers.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from sb3_breakout.config import ConfigError


def _train_freq_steps(value: Any) -> int | None:
    """``train_freq`` as a number of steps, or None when it counts episodes (left alone)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or str(value[1]) not in ("step", "episode"):
            raise ConfigError(f"train_freq={value!r} is not allowed: an integer >= 1 or (N, 'step'|'episode')")
        if value[1] == "episode":
            return None
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"train_freq={value!r} is not allowed: an integer >= 1 or (N, 'step'|'episode')")
    return value


def vector_step_schedule(train_freq: int, gradient_steps: int, n_envs: int) -> tuple[int, int]:
    """
    SB3's ``(train_freq, gradient_steps)`` (vector steps, updates per training call) that give
    ``gradient_steps / train_freq`` updates per *agent* step with ``n_envs`` games.

    Updates per vector step = ``gradient_steps * n_envs / train_freq``; written as the fraction
    ``a / b`` in lowest terms, SB3 gets ``train_freq = b``, ``gradient_steps = a``. Examples for the
    recipe (4, 1): 1 game (4, 1); 2 games (2, 1); 3 games (4, 3); 4 games (1, 1); 8 games (1, 2).
    The ratio is exact; only the grouping of updates changes (3 games: 3 updates every 4 vector steps).

    :param train_freq: agent steps between training calls in the recipe (>= 1).
    :param gradient_steps: updates per training call in the recipe (>= 1, or -1: as many as steps).
    :param n_envs: games played in parallel (>= 1).
    :return: ``(train_freq, gradient_steps)`` for SB3.
    """
    if gradient_steps == -1:  # SB3: one update per (vector) step collected
        gradient_steps = train_freq
    per_vector_step = Fraction(gradient_steps * n_envs, train_freq)
    return per_vector_step.denominator, per_vector_step.numerator


def check_parallel(entry: dict[str, Any]) -> None:
    """
    Refuse an entry whose schedules cannot be kept in agent steps with its ``n_envs``.

    :raises ConfigError: ``target_update_interval`` not a multiple of ``n_envs`` (SB3 would sync the
        target network every ``(interval // n_envs) * n_envs`` agent steps), or a bad ``train_freq``.
    """
    n_envs = int(entry.get("n_envs", 1))
    if n_envs <= 1:
        return
    _train_freq_steps(entry.get("train_freq", 4))
    interval = int(entry.get("target_update_interval", 10_000))
    if interval % n_envs:
        raise ConfigError(
            f"target_update_interval={interval} with n_envs={n_envs}: SB3 would sync the target network every "
            f"{max(interval // n_envs, 1) * n_envs} agent steps; allowed: an n_envs that divides {interval}"
        )


def per_vector_step(entry: dict[str, Any]) -> dict[str, Any]:
    """
    A copy of ``entry`` with ``train_freq`` and ``gradient_steps`` rewritten for SB3's vector steps
    (:func:`vector_step_schedule`); unchanged for one game or a ``train_freq`` counted in episodes.

    :param entry: a YAML entry (RL Zoo hyperparameters) in agent-step semantics; defaults: SB3's
        ``train_freq=4``, ``gradient_steps=1``, ``n_envs=1``.
    :return: the entry RL Zoo should build the model from.
    """
    n_envs = int(entry.get("n_envs", 1))
    steps = _train_freq_steps(entry.get("train_freq", 4))
    if n_envs <= 1 or steps is None:
        return dict(entry)
    train_freq, gradient_steps = vector_step_schedule(steps, int(entry.get("gradient_steps", 1)), n_envs)
    return {**entry, "train_freq": train_freq, "gradient_steps": gradient_steps}
