"""Callbacks: the notebooks' exploration schedule and running-reward log, and schedules of the learner's settings."""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


@dataclass
class NotebookEpsilonSchedule:
    """
    The notebooks' epsilon as an SB3 schedule (a function of ``progress_remaining``).

    ``epsilon(t) = 1.0`` for ``t < random_steps``, else
    ``max(final_eps, initial_eps - (initial_eps - final_eps) * t / decay_steps)``, with ``t`` the
    number of environment steps taken so far (all envs together). The decay counts from step 0, as
    in the notebooks, so it is already at ``1 - 0.9 * 50k / 1M = 0.955`` when the random phase ends.

    SB3 hands a schedule only ``progress_remaining = 1 - t / total_timesteps``; ``total_timesteps``
    (set by :class:`LinearEpsilonCallback` at the start of every ``learn``) turns it back into ``t``.
    It is a plain dataclass of numbers, so it pickles into the model zip without the model.
    """

    random_steps: int
    decay_steps: int
    initial_eps: float
    final_eps: float
    total_timesteps: int = 0

    def value(self, t: int) -> float:
        """Epsilon for the action taken after ``t`` environment steps."""
        if t < self.random_steps:
            return 1.0
        return max(self.final_eps, self.initial_eps - (self.initial_eps - self.final_eps) * t / self.decay_steps)

    def __call__(self, progress_remaining: float) -> float:
        return self.value(round((1.0 - progress_remaining) * self.total_timesteps))


class LinearEpsilonCallback(BaseCallback):
    """
    Make SB3's DQN explore exactly as the notebooks do (see :class:`NotebookEpsilonSchedule`).

    SB3's ``DQN._on_step`` runs after the callbacks and recomputes ``exploration_rate`` from
    ``model.exploration_schedule`` on every step, so setting the rate from a callback would be
    overwritten. This callback instead replaces ``model.exploration_schedule`` at the start of
    training: DQN itself then applies this schedule (and logs ``rollout/exploration_rate``), and
    ``exploration_fraction`` / ``exploration_*_eps`` of the DQN constructor are ignored.

    In the random phase epsilon is 1.0, so every action is uniform whatever the Q-network prefers.
    Keep ``learning_starts`` small: before it SB3 samples uniformly anyway.

    :param random_steps: environment steps of purely random actions (50,000 in the notebooks).
    :param decay_steps: steps over which epsilon falls from ``initial_eps`` to ``final_eps``,
        counted from step 0 (1,000,000).
    :param initial_eps: epsilon at step 0 (1.0).
    :param final_eps: epsilon after ``decay_steps`` (0.1).
    :param verbose: 0 silent.
    :raises ValueError: negative step counts, epsilons outside [0, 1] or ``final_eps > initial_eps``.
    """

    def __init__(
        self,
        random_steps: int = 50_000,
        decay_steps: int = 1_000_000,
        initial_eps: float = 1.0,
        final_eps: float = 0.1,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if random_steps < 0:
            raise ValueError(f"random_steps={random_steps} must be >= 0")
        if decay_steps <= 0:
            raise ValueError(f"decay_steps={decay_steps} must be > 0")
        for name, eps in (("initial_eps", initial_eps), ("final_eps", final_eps)):
            if not 0.0 <= eps <= 1.0:
                raise ValueError(f"{name}={eps} must be in [0, 1]")
        if final_eps > initial_eps:
            raise ValueError(f"final_eps={final_eps} must be <= initial_eps={initial_eps}")
        self.schedule = NotebookEpsilonSchedule(int(random_steps), int(decay_steps), float(initial_eps),
                                                float(final_eps))

    def _on_training_start(self) -> None:
        self.schedule.total_timesteps = self.model._total_timesteps
        self.model.exploration_schedule = self.schedule  # type: ignore[attr-defined]
        # The first action of this learn() call is chosen before DQN._on_step ever runs.
        self.model.exploration_rate = self.schedule.value(self.num_timesteps)  # type: ignore[attr-defined]

    def _on_step(self) -> bool:
        self.logger.record("rollout/exploration_rate", self.schedule.value(self.num_timesteps))
        return True


class RunningRewardCallback(BaseCallback):
    """
    The notebooks' progress line and stopping rule.

    Every ``log_every`` environment steps it prints
    ``running reward: X at episode Y, frame count Z``, where X is the mean *true game score* of the
    last ``window`` games, read from the Monitor's ``info["episode"]`` (never the clipped or
    penalised training reward), Y the number of games finished and Z the environment steps taken.
    It also logs X as ``rollout/running_reward``.

    The first time X > ``solved_at`` (checked when a game ends, as in the notebooks) the task counts
    as solved: ``solved`` becomes True and ``solved_step`` holds the step. Training then stops, as in
    the notebooks, unless ``stop_when_solved`` is False (a run that should go on to a higher score;
    :class:`sb3_breakout.checkpoint.CheckpointCallback` keeps a checkpoint of the solved step). It
    also stops after ``max_episodes`` games when that is > 0.

    :param log_every: environment steps between two lines (10,000 in the notebooks).
    :param window: games in the running mean (100).
    :param solved_at: running reward above which the task counts as solved (40.0).
    :param max_episodes: stop after this many games; 0 for no limit.
    :param stop_when_solved: stop training once solved (True, the notebooks' rule).
    """

    def __init__(self, log_every: int = 10_000, window: int = 100, solved_at: float = 40.0, max_episodes: int = 0,
                 stop_when_solved: bool = True, verbose: int = 0) -> None:
        super().__init__(verbose)
        if log_every <= 0 or window <= 0 or max_episodes < 0:
            raise ValueError(
                f"log_every={log_every} and window={window} must be > 0, max_episodes={max_episodes} >= 0"
            )
        self.log_every = int(log_every)
        self.solved_at = float(solved_at)
        self.max_episodes = int(max_episodes)
        self.stop_when_solved = bool(stop_when_solved)
        self.solved_step: int | None = None
        self.scores: deque[float] = deque(maxlen=int(window))
        self.episode_count = 0
        self.solved = False

    @property
    def running_reward(self) -> float:
        """Mean true score of the last ``window`` games (0.0 before the first game ends)."""
        return float(np.mean(self.scores)) if self.scores else 0.0

    def _on_step(self) -> bool:
        stop = False
        for info in self.locals.get("infos", ()):
            episode = info.get("episode")
            if episode is None:
                continue
            self.scores.append(float(episode["r"]))
            self.episode_count += 1
            if not self.solved and len(self.scores) > 0 and self.running_reward > self.solved_at:
                self.solved, self.solved_step = True, self.num_timesteps
                print(f"Solved at episode {self.episode_count}, step {self.num_timesteps}!", flush=True)
                stop = stop or self.stop_when_solved
            if self.max_episodes and self.episode_count >= self.max_episodes:
                stop = True
        n_envs = self.training_env.num_envs if self.training_env is not None else 1
        crossed = self.num_timesteps // self.log_every != (self.num_timesteps - n_envs) // self.log_every
        if crossed or stop:
            self.print_line()
        return not stop

    def print_line(self) -> None:
        """Print the notebooks' line and log the running reward."""
        self.logger.record("rollout/running_reward", self.running_reward)
        print(
            f"running reward: {self.running_reward:.2f} at episode {self.episode_count}, "
            f"frame count {self.num_timesteps}",
            file=sys.stdout,
            flush=True,
        )


class NStepScheduleCallback(BaseCallback):
    """
    Anneal the replay buffer's n-step horizon from ``initial`` to ``final`` (BBF's schedule).

    BBF (Schwarzer et al. 2023) starts its n-step returns long, 10 steps, while the values are still
    uninformed and shortens them exponentially to 3; its Breakout ablation with n fixed at 10 drops
    from ~345 to ~28. Neither SB3 nor sb3-contrib schedules ``n_steps``, so this callback sets
    ``model.replay_buffer.n_steps`` from the step count before every rollout step:
    ``n(t) = round(initial * (final / initial) ** f)``, ``f = clip((t - start) / (end - start), 0, 1)``,
    ``t`` the environment steps taken so far (all envs together). It reads only ``num_timesteps``,
    so a resumed run continues the schedule where it stopped.

    The buffer must compute n-step sums when it samples (``FrameStackReplayBuffer`` with
    ``replay_buffer_kwargs=dict(n_steps=<final>, gamma=<gamma>)``); it carries each sample's
    ``discounts = gamma ** k``, which SB3's DQN and sb3-contrib's QR-DQN use in the target.

    :param initial: horizon until ``start`` (10).
    :param final: horizon from ``end`` on (3).
    :param start: environment step where the annealing begins (20,000).
    :param end: environment step where it reaches ``final`` (100,000).
    :param verbose: 0 silent.
    :raises ValueError: horizons below 1 or ``end <= start`` or a negative ``start``.
    """

    def __init__(self, initial: int = 10, final: int = 3, start: int = 20_000, end: int = 100_000,
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        if initial < 1 or final < 1:
            raise ValueError(f"initial={initial} and final={final} must be integers >= 1")
        if start < 0 or end <= start:
            raise ValueError(f"start={start} must be >= 0 and end={end} > start")
        self.initial, self.final, self.start, self.end = int(initial), int(final), int(start), int(end)

    def value(self, t: int) -> int:
        """The n-step horizon after ``t`` environment steps."""
        fraction = min(max((t - self.start) / (self.end - self.start), 0.0), 1.0)
        return max(1, round(self.initial * (self.final / self.initial) ** fraction))

    def _on_training_start(self) -> None:
        buffer = getattr(self.model, "replay_buffer", None)
        if buffer is None or not hasattr(buffer, "n_steps"):
            raise ValueError(
                "NStepScheduleCallback needs a replay buffer with n_steps (sb3_breakout.buffers."
                "FrameStackReplayBuffer with replay_buffer_kwargs=dict(n_steps=..., gamma=...))"
            )
        buffer_gamma, gamma = float(buffer.gamma), float(self.model.gamma)  # type: ignore[attr-defined]
        if abs(buffer_gamma - gamma) > 1e-12:  # the n-step sums would discount with another gamma than the target
            raise ValueError(f"NStepScheduleCallback: the replay buffer's gamma={buffer_gamma} is not the learner's "
                             f"gamma={gamma}; pass replay_buffer_kwargs=dict(n_steps=..., gamma={gamma})")
        buffer.n_steps = self.value(self.num_timesteps)

    def _on_step(self) -> bool:
        # read from the model each step: load_replay_buffer may have put another buffer there
        self.model.replay_buffer.n_steps = self.value(self.num_timesteps)  # type: ignore[union-attr]
        return True


class ReplayRatioScheduleCallback(BaseCallback):
    """
    More updates per agent step early in a run, fewer later: ``train_freq`` switched at an agent step.

    On a CPU the update is most of a step's time, so the fast QR-DQN entry makes one update per 8
    agent steps; per agent step it learns slower than at one per 4, most of all before ~200k
    (docs/results.md), which is where the running mean's crossing of 40 is decided. This callback sets
    the learner's ``train_freq`` to ``initial`` (in SB3's unit, vector steps, as the YAML's) until
    agent step ``until`` and to ``final`` from then on. Neither SB3 nor sb3-contrib schedules
    ``train_freq``; a callback in the YAML's ``callback`` list is read by ``sb3_breakout.train`` and
    ``rl_zoo3.train`` alike, so both trainers make the same updates. It reads only ``num_timesteps``,
    so a resumed run (whose zip may hold either value) continues the schedule where it stopped. SB3
    reads ``train_freq`` when it starts collecting, so the switch takes effect at the next collection
    (at most ``initial`` vector steps late).

    :param initial: ``train_freq`` before ``until`` (vector steps; 1 with the entry's 4 games: one update
        per 4 agent steps).
    :param final: ``train_freq`` from ``until`` on: the entry's own ``train_freq`` (checked when a run
        starts from step 0).
    :param until: agent step (all games together) where ``final`` takes over (150,000).
    :param verbose: 1 (default): one line when ``train_freq`` changes; 0 silent.
    :raises ValueError: a ``train_freq`` below 1, a negative ``until``, or ``final`` not the learner's.
    """

    def __init__(self, initial: int = 1, final: int = 2, until: int = 150_000, verbose: int = 1) -> None:
        super().__init__(verbose)
        if int(initial) < 1 or int(final) < 1:
            raise ValueError(f"initial={initial} and final={final} must be integers >= 1 (vector steps)")
        if int(until) < 0:
            raise ValueError(f"until={until} must be an agent step >= 0")
        self.initial, self.final, self.until = int(initial), int(final), int(until)

    def value(self, t: int) -> int:
        """``train_freq`` (vector steps) after ``t`` agent steps."""
        return self.initial if t < self.until else self.final

    def _apply(self) -> None:
        current = self.model.train_freq  # type: ignore[attr-defined]
        wanted = self.value(self.num_timesteps)
        if current.frequency != wanted:
            self.model.train_freq = type(current)(wanted, current.unit)  # type: ignore[attr-defined]
            if self.verbose >= 1:
                print(f"ReplayRatioScheduleCallback: train_freq {current.frequency} -> {wanted} vector steps "
                      f"at agent step {self.num_timesteps:,}", flush=True)

    def _on_training_start(self) -> None:
        own = self.model.train_freq.frequency  # type: ignore[attr-defined]
        if self.num_timesteps == 0 and own != self.final:
            raise ValueError(f"ReplayRatioScheduleCallback: final={self.final} is not the learner's train_freq="
                             f"{own}; pass final={own} (the entry's own train_freq, in vector steps)")
        self._apply()

    def _on_step(self) -> bool:
        self._apply()
        return True
