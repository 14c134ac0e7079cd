"""
Choose torch's CPU thread count while training, from the speed the run actually gets.

Why this exists: on a CPU the DQN update is the wall, and its best thread count depends on what
else the machine is doing. On the project's 2-core machine, 2 threads make the update ~2x faster
when the machine is quiet, but with one other CPU-heavy process they are many times slower than
1 thread (OpenMP's threads wait on each other at every operator while one of them is descheduled).
No fixed number is right on a shared machine, and neither SB3 nor RL Zoo choose one
(``--num-threads`` is fixed for the whole run), so this callback measures.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch as th
from stable_baselines3.common.callbacks import BaseCallback


def thread_candidates(max_threads: int | None = None) -> list[int]:
    """
    Thread counts worth trying: 1, half the cores and all of them (distinct, ascending).

    :param max_threads: the most threads to try (default: the CPUs this process may run on).
    """
    if max_threads is None:
        max_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return sorted({1, max(1, max_threads // 2), max(1, max_threads)})


@dataclass
class ThreadChoice:
    """
    The decision rule, apart from torch and the clock: probe every candidate for a window of steps,
    keep the fastest for ``hold_steps``, and probe again early if the speed falls below ``drop`` times
    the speed measured when the choice was made.

    The drop test guards only against the machine getting busy. A choice of fewer threads than the
    most (made while something else ran) cannot see the machine get quiet again: 1 thread runs about
    as fast either way. So such a choice is held for ``short_hold_steps`` first, doubled each time a
    probe confirms it, up to ``hold_steps``: a few minutes of tests or a greedy check beside a long
    run no longer cost it ``hold_steps`` at the slow setting, and a machine that stays busy is probed
    about as rarely as before.

    Speeds are agent steps per second of wall time, over a window that starts ``warmup_steps`` after
    the switch (a new OpenMP team and cold caches make the first updates slower) and ends after
    ``probe_steps`` steps or ``probe_seconds``, whichever comes first (a thread count that collapses
    on a busy machine is not run for long).
    """

    candidates: list[int]
    probe_steps: int = 500
    probe_seconds: float = 10.0
    hold_steps: int = 50_000
    warmup_steps: int = 40
    drop: float = 0.6
    short_hold_steps: int = 10_000
    rates: dict[int, float] = field(default_factory=dict)
    chosen: int | None = None
    hold: int = 0  #: agent steps the current choice is kept before the next probe
    previous: int | None = None  #: the choice before the current probe round

    def choose(self) -> int:
        """End a probe round: keep the fastest candidate and set how long it is held."""
        self.chosen = self.fastest()
        if self.chosen == max(self.candidates):
            self.hold = self.hold_steps
        elif self.chosen == self.previous:  # confirmed: look again less often
            self.hold = min(2 * self.hold, self.hold_steps)
        else:
            self.hold = min(self.short_hold_steps, self.hold_steps)
        return self.chosen

    def reprobe(self) -> None:
        """Start a new probe round (the current choice is remembered for :meth:`choose`)."""
        self.previous, self.chosen, self.rates = self.chosen, None, {}

    def fastest(self) -> int:
        """The candidate with the highest measured speed (the fewest threads among equals)."""
        return max(sorted(self.rates), key=lambda n: self.rates[n])

    def next_probe(self) -> int | None:
        """The next candidate without a measured speed in this round, or None when all have one."""
        return next((n for n in self.candidates if n not in self.rates), None)

    def window_done(self, steps: int, seconds: float) -> bool:
        """Whether a timing window of ``steps`` agent steps over ``seconds`` is long enough."""
        return steps >= self.probe_steps or (steps > 0 and seconds >= self.probe_seconds)

    def should_reprobe(self, held_steps: int, rate: float) -> bool:
        """After :attr:`hold` steps, or when the held setting runs at under ``drop`` of its probed speed."""
        if self.chosen is None:
            return False
        return held_steps >= self.hold or rate < self.drop * self.rates[self.chosen]


class AdaptiveThreadsCallback(BaseCallback):
    """
    Set ``torch.set_num_threads`` to whichever of :func:`thread_candidates` trains fastest now.

    Training goes on throughout: each candidate runs in turn for ``probe_steps`` agent steps or
    ``probe_seconds``, whichever ends first (the first ``warmup_steps`` after a switch are not timed),
    the fastest is kept for ``hold_steps`` (fewer threads than the most: ``short_hold_steps`` at
    first, see :class:`ThreadChoice`), then all are probed again, so a machine that becomes busy
    (or quiet) is noticed. While a choice is held, its speed is checked over windows of the same
    length, and a drop below ``drop`` times its probed speed starts a new probe at once. Probing starts
    only once SB3 trains (``learning_starts``), as the update is what threads speed up. Logs ``time/torch_threads``.

    The thread count can change the rounding of the convolutions' sums, so a run with this callback
    is not bit-for-bit reproducible; pass a fixed ``--num-threads`` for that.

    :param candidates: thread counts to choose from (default: :func:`thread_candidates`).
    :param probe_steps: agent steps timed per candidate (500: ~5 s at ~100 steps/s).
    :param probe_seconds: seconds after which a window ends even short of ``probe_steps`` (10).
    :param hold_steps: agent steps a choice is kept before probing again (50,000).
    :param short_hold_steps: the first hold of a choice of fewer threads than the most (10,000).
    :param warmup_steps: agent steps after a switch left out of the timing (40: 10 updates).
    :param drop: fraction of the probed speed under which the choice is probed again early (0.6).
    :param verbose: 1 prints each choice.
    """

    def __init__(
        self,
        candidates: list[int] | None = None,
        probe_steps: int = 500,
        probe_seconds: float = 10.0,
        hold_steps: int = 50_000,
        warmup_steps: int = 40,
        drop: float = 0.6,
        short_hold_steps: int = 10_000,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        candidates = sorted(set(candidates or thread_candidates()))
        if not candidates or candidates[0] < 1:
            raise ValueError(f"AdaptiveThreadsCallback: candidates={candidates!r}; allowed: integers >= 1")
        if (probe_steps < 1 or probe_seconds <= 0 or hold_steps < 1 or short_hold_steps < 1 or warmup_steps < 0
                or not 0 < drop < 1):
            raise ValueError(
                f"AdaptiveThreadsCallback: probe_steps={probe_steps}, probe_seconds={probe_seconds}, "
                f"hold_steps={hold_steps}, short_hold_steps={short_hold_steps}, warmup_steps={warmup_steps}, "
                f"drop={drop}; allowed: probe_steps, hold_steps, short_hold_steps >= 1, probe_seconds > 0, "
                "warmup_steps >= 0, drop in (0, 1)"
            )
        self.choice = ThreadChoice(candidates, probe_steps, probe_seconds, hold_steps, warmup_steps, drop,
                                   short_hold_steps)
        self.history: list[tuple[int, int, float]] = []  #: (agent step, threads, steps/s) of every window
        self._window_start: tuple[int, float] | None = None  # (agent step, time) the timing began
        self._switched_at = 0
        self._held_since = 0

    def _switch(self, threads: int) -> None:
        th.set_num_threads(threads)
        self._switched_at = self.num_timesteps
        self._window_start = None

    def _on_training_start(self) -> None:
        self._switch(self.choice.next_probe() or self.choice.candidates[0])

    def _on_step(self) -> bool:
        if self.num_timesteps <= self.model.learning_starts:
            self._switched_at = self.num_timesteps
            return True
        if self._window_start is None:
            if self.num_timesteps - self._switched_at >= self.choice.warmup_steps:
                self._window_start = (self.num_timesteps, time.perf_counter())
            return True
        steps = self.num_timesteps - self._window_start[0]
        seconds = time.perf_counter() - self._window_start[1]
        if not self.choice.window_done(steps, seconds):
            return True
        rate = steps / max(seconds, 1e-9)
        threads = th.get_num_threads()
        self.history.append((self.num_timesteps, threads, rate))
        self.logger.record("time/torch_threads", threads)
        if self.choice.chosen is None:  # probing
            self.choice.rates[threads] = rate
            probe = self.choice.next_probe()
            if probe is not None:
                self._switch(probe)
            else:
                self.choice.choose()
                self._held_since = self.num_timesteps
                if self.verbose:
                    speeds = ", ".join(f"{n}: {r:.0f}" for n, r in sorted(self.choice.rates.items()))
                    print(f"torch threads: {self.choice.chosen} (agent steps/s by threads: {speeds})")
                self._switch(self.choice.chosen)
        elif self.choice.should_reprobe(self.num_timesteps - self._held_since, rate):
            self.choice.reprobe()
            self._switch(self.choice.next_probe())
        else:
            self._window_start = (self.num_timesteps, time.perf_counter())
        return True
