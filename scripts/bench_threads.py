"""
Torch thread counts for training, on a quiet machine and on a shared one, in one run.

sb3_breakout's default training (``hyperparams/dqn.yml``, learning phase: train every 4 steps, batch
32, epsilon 0.1) runs with ``--num-threads`` 1, all cores, and ``auto``
(:class:`sb3_breakout.threads.AdaptiveThreadsCallback`, probing included in the timing), first as
the machine is, then beside ``--hog`` busy processes (each a pure-Python loop on one core, standing in
for another training run). Each configuration runs in its own subprocess for ``--steps`` agent steps
or ``--max-seconds``, whichever ends first, and prints agent steps/s; the ratios auto/1 and auto/all
are taken within each condition. For auto it also prints the speed once its choice is made: in a
long run the probes (two windows of at most ~10 s every 50,000 steps) are a small part of the time,
in these short runs they are not.

    python scripts/bench_threads.py                    # ~8 minutes here
    python scripts/bench_threads.py --hog 1 --steps 2000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

EPS = 0.1


def busy() -> None:
    """A CPU hog: one core's worth of pure Python."""
    x = 0
    while True:
        x = (x + 1) % 1_000_003


def child(threads: str, warmup: int, steps: int, max_seconds: float) -> None:
    import argparse as ap
    import tempfile

    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback

    from sb3_breakout.callbacks import LinearEpsilonCallback
    from sb3_breakout.config import default_config
    from sb3_breakout.threads import AdaptiveThreadsCallback, thread_candidates
    from sb3_breakout.train import BreakoutExperimentManager

    class Timer(BaseCallback):
        """Agent steps/s after ``warmup`` steps; stops at ``steps`` timed steps or ``max_seconds``."""

        def __init__(self) -> None:
            super().__init__()
            self.t0, self.start = None, 0

        def _on_step(self) -> bool:
            if self.t0 is None:
                if self.num_timesteps >= warmup:
                    self.t0, self.start = time.perf_counter(), self.num_timesteps
                return True
            return self.num_timesteps - self.start < steps and time.perf_counter() - self.t0 < max_seconds

        def rate(self) -> float:
            return (self.num_timesteps - self.start) / (time.perf_counter() - self.t0)

    callbacks = [LinearEpsilonCallback(random_steps=0, decay_steps=1, initial_eps=EPS, final_eps=EPS)]
    if threads == "auto":
        auto = AdaptiveThreadsCallback()
        callbacks.append(auto)
    else:
        th.set_num_threads(int(threads) if threads != "all" else thread_candidates()[-1])
    timer = Timer()
    with tempfile.TemporaryDirectory() as log:
        exp = BreakoutExperimentManager(ap.Namespace(), "dqn", "BreakoutNoFrameskip-v4", log, seed=0, verbose=0,
                                        n_timesteps=warmup + steps, eval_freq=-1, hyperparams={"learning_starts": 32},
                                        device="cpu", config=str(default_config("dqn")))
        model, _ = exp.setup_experiment()
        # the timer first: it starts the clock before the thread probe does anything
        model.learn(warmup + steps, callback=[timer, *callbacks])
    windows, held = [], None
    if threads == "auto":  # the thread count of each timing window; the speed once a choice is held
        windows = [f"{n}@{step}" for step, n, _ in auto.history]
        after = [rate for step, n, rate in auto.history[len(auto.choice.candidates):]]
        held = sum(after) / len(after) if after else None
    print(json.dumps({"steps_per_s": timer.rate(), "steps": timer.num_timesteps - timer.start,
                      "windows": windows[-8:], "held_steps_per_s": held}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="timed agent steps per configuration")
    parser.add_argument("--warmup", type=int, default=100, help="learning-phase steps before timing")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="timing cut-off per configuration")
    parser.add_argument("--hog", type=int, default=1, help="busy processes for the shared condition (0: skip it)")
    parser.add_argument("--modes", nargs="+", default=["1", "all", "auto"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.warmup, args.steps, args.max_seconds)
        return

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; {args.steps} timed steps "
          f"or {args.max_seconds:.0f} s per configuration")
    conditions = [("as the machine is", 0)] + ([(f"beside {args.hog} busy process(es)", args.hog)] if args.hog else [])
    for label, n_hogs in conditions:
        hogs = [mp.Process(target=busy, daemon=True) for _ in range(n_hogs)]
        for hog in hogs:
            hog.start()
        try:
            rates = {}
            for mode in args.modes:
                out = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(args.steps),
                                      "--warmup", str(args.warmup), "--max-seconds", str(args.max_seconds)],
                                     capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rates[mode] = result["steps_per_s"]
                extra = f"  (thread windows: {' '.join(result['windows'])})" if result["windows"] else ""
                if result["held_steps_per_s"]:
                    extra += f"; {result['held_steps_per_s']:.1f} steps/s once chosen (probing excluded)"
                print(f"{label:<28} threads {mode:<4} {rates[mode]:7.1f} steps/s over {result['steps']} steps{extra}",
                      flush=True)
            if "auto" in rates:
                ratios = ", ".join(f"auto/{m} {rates['auto'] / rates[m]:.2f}" for m in rates if m != "auto")
                print(f"{label:<28} {ratios}")
        finally:
            for hog in hogs:
                hog.terminate()


if __name__ == "__main__":
    main()
