"""
Parallel games (``n_envs > 1``): the units of ``train_freq``, and the checks that keep the other
schedules in agent steps.

A YAML entry is read by two trainers, ``python -m sb3_breakout.train`` and ``python -m rl_zoo3.train``,
and both hand its values to SB3 unchanged, so the file holds SB3's own units: ``train_freq`` counts
*vector* steps (one step of every game, ``n_envs`` transitions) and ``gradient_steps`` updates per
training call. The recipe's "one update of batch 32 every 4 transitions" is therefore ``train_freq: 4``
with one game and ``train_freq: 1`` with four; :func:`vector_step_schedule` gives the pair for any
``n_envs`` and :func:`describe_schedule` prints what an entry means in agent steps at the start of a run.
(Earlier versions of this package rewrote ``train_freq`` for ``n_envs`` inside their own trainer only:
the same file then meant 4x more updates under ``sb3_breakout.train`` than under ``rl_zoo3.train``.
Runs trained that way resume with the schedule saved in their checkpoint's model, see
:func:`sb3_breakout.checkpoint.saved_schedule`.)

The other schedules already count agent steps (all games together) in SB3 and in this package:

- epsilon: :class:`sb3_breakout.callbacks.LinearEpsilonCallback` reads ``num_timesteps``;
- learning starts: SB3 trains once ``num_timesteps > learning_starts``;
- target sync: SB3 syncs every ``target_update_interval // n_envs`` vector steps, which is
  ``target_update_interval`` agent steps when ``n_envs`` divides it (:func:`check_parallel` refuses
  an entry where it does not, rather than sync at a rounded interval);
- the running-reward log and the checkpoints fire when ``num_timesteps`` crosses a multiple of their
  period (:class:`sb3_breakout.callbacks.RunningRewardCallback`, :class:`sb3_breakout.checkpoint.CheckpointCallback`).

Acting is one batched forward pass for all games (SB3's ``predict`` on the stacked observations).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from sb3_breakout.callbacks import ReplayRatioScheduleCallback
from sb3_breakout.config import ConfigError, named_entries, resolve


def _train_freq_steps(value: Any) -> int | None:
    """``train_freq`` as a number of steps, or None when it counts episodes."""
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
    ``gradient_steps / train_freq`` updates per *agent* step with ``n_envs`` games: what to write in a
    YAML entry to keep a one-game recipe.

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


def agent_steps_per_update(entry: dict[str, Any]) -> Fraction | None:
    """
    Agent steps (transitions, all games together) per gradient update under SB3's units, or None for a
    ``train_freq`` counted in episodes. Defaults: SB3's ``train_freq=4``, ``gradient_steps=1``, one game.
    """
    steps = _train_freq_steps(entry.get("train_freq", 4))
    if steps is None:
        return None
    n_envs = int(entry.get("n_envs", 1))
    gradient_steps = int(entry.get("gradient_steps", 1))
    if gradient_steps == -1:
        gradient_steps = steps * n_envs  # SB3: as many updates as transitions collected
    return Fraction(steps * n_envs, max(gradient_steps, 1))


def describe_schedule(entry: dict[str, Any]) -> str | None:
    """
    One line for the training log of an entry with parallel games (None for one game); with a
    ``ReplayRatioScheduleCallback`` in its callbacks, the early rate and the agent step of the switch too.
    """
    schedules = [kwargs for name, kwargs in named_entries(entry.get("callback") or [], "callback")
                 if resolve(name, "callback") is ReplayRatioScheduleCallback]
    early = ReplayRatioScheduleCallback(**schedules[0]) if schedules else None
    if early is not None:  # a run resumed before the switch holds the early train_freq: name the final one
        entry = {**entry, "train_freq": early.final}
    n_envs = int(entry.get("n_envs", 1))
    per_update = agent_steps_per_update(entry)
    if n_envs <= 1 or per_update is None:
        return None
    line = (f"{n_envs} games: train_freq {_train_freq_steps(entry.get('train_freq', 4))} vector steps (SB3's unit), "
            f"gradient_steps {entry.get('gradient_steps', 1)}: one update per {float(per_update):g} agent steps")
    if early is not None:
        early_per_update = agent_steps_per_update({**entry, "train_freq": early.initial})
        line += (f"; one per {float(early_per_update):g} before agent step {early.until:,} "
                 f"(ReplayRatioScheduleCallback, train_freq {early.initial})")
    return line


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
