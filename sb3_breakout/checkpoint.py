"""
Checkpoints that survive a kill: the callback that writes everything needed to continue a run,
atomically, and the pieces ``train --resume`` restores from it.

What a checkpoint holds and how it is checked and read back: :mod:`sb3_breakout.checkpoint_files`.
It is written into ``step_<N>.tmp/`` and renamed into place (an atomic rename on POSIX), so a kill at
any moment leaves the previous checkpoint intact; only the last ``keep`` checkpoints are kept, plus
the one written when the running reward first passed ``solved_at`` (marked by a ``pinned`` file).

A full disk (``ENOSPC``, ``EFBIG`` past a file-size limit, ``EDQUOT``) while writing a checkpoint
drops that checkpoint (its ``.tmp`` folder is removed), says so in one line on stderr and training
goes on; the next save tries again. Nothing older is pruned before a newer checkpoint is in place.

Each checkpoint's ``model.zip`` also has RL Zoo's name ``<run>/rl_model_<N>_steps.zip`` (a hard link,
no second copy), so that ``rl_zoo3.enjoy --load-checkpoint N`` finds it: :mod:`sb3_breakout.zoo_links`.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_breakout import monitor_clock, zoo_links
from sb3_breakout.atomic_write import describe_write_error, is_disk_full
from sb3_breakout.callbacks import RunningRewardCallback
from sb3_breakout.checkpoint_files import (
    PINNED,
    STEP_PREFIX,
    CheckpointError,
    checkpoint_dir,
    checkpoint_root,
    checkpoint_step,
    fsync_path,
    intact_models,
    latest_valid_checkpoint,
    list_checkpoints,
    verify_checkpoint,
    write_manifest,
)
from sb3_breakout.precision import record_choice


class TrainingDivergedError(RuntimeError):
    """The loss or the network's weights stopped being finite."""


def close_quietly(env: Any) -> None:
    """
    Close ``env`` after a write failed for a full disk: its Monitor file still holds the row that did
    not fit and tries to write it again on close; that error is the one already reported.
    """
    try:
        env.close()
    except OSError:
        pass


def rng_state(model: Any) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": th.get_rng_state(),
        "action_space": model.action_space.np_random.bit_generator.state,
    }


def restore_rng_state(model: Any, state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    th.set_rng_state(state["torch"])
    model.action_space.np_random.bit_generator.state = state["action_space"]


def weights_are_finite(model: Any) -> bool:
    return all(bool(th.isfinite(p).all()) for p in model.policy.parameters())


class CheckpointCallback(BaseCallback):
    """
    Write a checkpoint every ``save_freq`` agent steps and when SIGINT or SIGTERM arrives; stop
    training on a non-finite loss or weights.

    The checkpoint is written at the first rollout start after it is due (with ``train_freq: 4``,
    within 4 steps), when the last step's transition is stored and its gradient step is done, so
    that a resumed run continues exactly from there. On SIGINT/SIGTERM the current rollout
    finishes, a checkpoint is written and training stops (``interrupted`` is then True). When the
    running reward first passes its ``solved_at``, a checkpoint is written at once and kept whatever
    ``keep`` says, so that the agent of the solved step can be evaluated (``evaluate
    --load-checkpoint N``). Every step the last logged ``train/loss`` is checked, and the
    weights before each checkpoint: a NaN or inf raises :class:`TrainingDivergedError` and no
    checkpoint is written, so the last good one stays. (The loss is the Huber loss of the sampled
    Q-values against their targets, so a non-finite Q-value makes it non-finite; with finite weights
    and uint8 frames the Q-values are finite.)

    :param run_dir: the run folder (RL Zoo's ``<log>/<algo>/<env>_<id>``).
    :param save_freq: agent steps (all envs together) between checkpoints; <= 0 only on signals.
    :param keep: number of checkpoints kept (older ones are deleted).
    :param running_reward: the run's running-reward callback, whose state is saved; None if absent.
    :param n_timesteps: the agent steps this process trains to, saved so that a plain ``--resume`` goes
        on to them (a resume's ``-n`` is not in the run's ``args.yml``); None: not saved.

    Each checkpoint's ``model.zip`` is also ``<run>/rl_model_<N>_steps.zip``, the name RL Zoo's
    ``enjoy`` and ``record_video`` look for (``--load-checkpoint N``, ``--load-last-checkpoint``): a hard
    link, the same file (a relative symlink where hard links are refused). It is made once the folder is
    in place (a second save at the same step links the new model), removed just before the folder when
    the checkpoint is rotated away (a pinned checkpoint keeps it), and checked at the start of training
    (every ``--resume``): names of checkpoints that are gone are removed, missing ones made. A link that
    cannot be made is a one-line warning; the checkpoint stays and training goes on.

    A checkpoint that cannot be written for a full disk is dropped with a one-line warning on stderr
    (``failed_saves`` counts them) and training goes on; the next one is tried at the next due step
    (a pinned one that failed makes the next checkpoint written the pinned one).
    """

    def __init__(self, run_dir: str | Path, save_freq: int = 100_000, keep: int = 2,
                 running_reward: RunningRewardCallback | None = None, n_timesteps: int | None = None,
                 verbose: int = 1) -> None:
        super().__init__(verbose)
        self.n_timesteps = n_timesteps
        self.run_dir = Path(run_dir)
        self.save_freq = int(save_freq)
        self.keep = max(1, int(keep))
        self.running_reward = running_reward
        self.interrupted = False
        self._pending = False  # a checkpoint is due at the next rollout start
        self._stop = False
        self.last_checkpoint: Path | None = None  # the newest whole checkpoint of the run
        self.failed_saves = 0
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._was_solved = True  # set from the running reward at the start of training
        self._precision_recorded = False
        self._pin = False

    # -- signals
    def _handle(self, signum: int, _frame: Any) -> None:
        self._signal = signum

    def _on_training_start(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.signal(sig, self._handle)
        self._was_solved = self.running_reward is None or self.running_reward.solved
        try:  # a resumed run: the checkpoint it resumed from (a damaged newer one is not "good")
            self.last_checkpoint = latest_valid_checkpoint(self.run_dir)[0]
        except CheckpointError:
            self.last_checkpoint = None
        # RL Zoo's names as the checkpoints are (a kill may have left them not so), none for a damaged model
        zoo_links.sync(self.run_dir, intact_models(self.run_dir))

    # -- every step
    def _on_step(self) -> bool:
        if self._stop:
            return False
        loss = self.logger.name_to_value.get("train/loss")
        if loss is not None and not np.isfinite(loss):
            raise TrainingDivergedError(
                f"training loss became {loss} at step {self.num_timesteps}; the last good checkpoint is kept"
            )
        n_envs = self.training_env.num_envs if self.training_env is not None else 1
        step, freq = self.num_timesteps, self.save_freq
        due = freq > 0 and step // freq != (step - n_envs) // freq
        if not self._was_solved and self.running_reward is not None and self.running_reward.solved:
            self._was_solved = self._pin = True
        self._pending = self._pending or due or self._pin or self._signal is not None
        return True

    # SB3 stores a step's transition and runs DQN._on_step *after* the callbacks' on_step, and the
    # gradient step after the rollout: the state is whole only at the start of the next rollout.
    def _on_rollout_start(self) -> None:
        if not self._precision_recorded:  # bf16="auto": into policy_kwargs once measured (any zip says it)
            self._precision_recorded = record_choice(self.model) is not None
        written = None
        if self._pending or self._signal is not None:
            written = self.save()
        if self._signal is not None:
            self._stop = self.interrupted = True
            if self.verbose:
                what = "checkpoint written" if written is not None else (
                    f"no checkpoint written (the last good one is {self.last_checkpoint})")
                print(f"{signal.Signals(self._signal).name} received: {what} at step {self.num_timesteps}", flush=True)

    def _on_training_end(self) -> None:
        if self._pending and not self._stop:
            self.save()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()

    def save(self) -> Path | None:
        """
        Write the checkpoint of the current step.

        :return: its folder, or None when the disk was full (said on stderr; nothing older is lost).
        """
        if not weights_are_finite(self.model):
            raise TrainingDivergedError(
                f"network weights are not finite at step {self.num_timesteps}; the last good checkpoint is kept"
            )
        root = checkpoint_root(self.run_dir)
        final = checkpoint_dir(self.run_dir, self.num_timesteps)
        tmp = final.with_name(f"{final.name}.tmp")
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{STEP_PREFIX}*.tmp"):  # this one, or unfinished ones of a killed process
            shutil.rmtree(stale, ignore_errors=True)
        try:
            self._write(tmp)
        except (OSError, CheckpointError) as exc:
            if isinstance(exc, OSError) and not is_disk_full(exc):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            self._pending = False  # the next due step tries again; _pin is kept for it
            self.failed_saves += 1
            reason = describe_write_error(exc) if isinstance(exc, OSError) else str(exc)
            kept = (f"the last good checkpoint {self.last_checkpoint} is kept" if self.last_checkpoint is not None
                    else "there is no earlier checkpoint")
            print(f"warning: checkpoint of step {self.num_timesteps} not written: {reason}; {kept}, training "
                  "goes on and the next save tries again", file=sys.stderr, flush=True)
            return None
        replaced = final.with_name(f"{final.name}.replaced")  # a second save at the same step (resumed,
        if final.exists():  # then stopped at once): the old copy is moved aside, never deleted before the new
            shutil.rmtree(replaced, ignore_errors=True)  # one is in place; neither name is listed as a checkpoint
            os.rename(final, replaced)
        os.rename(tmp, final)
        fsync_path(root)
        zoo_links.name_checkpoint(self.run_dir, self.num_timesteps, final / "model.zip")
        shutil.rmtree(replaced, ignore_errors=True)
        rotated = [c for c in list_checkpoints(self.run_dir) if not (c / PINNED).exists()]
        for old in rotated[: -self.keep]:
            zoo_links.remove_name(self.run_dir, checkpoint_step(old))  # the name first: it never dangles
            shutil.rmtree(old, ignore_errors=True)
        self._pending = self._pin = False
        self.last_checkpoint = final
        if self.verbose:
            print(f"checkpoint: {final}", flush=True)
        return final

    def _write(self, tmp: Path) -> None:
        """Every file of the checkpoint into ``tmp``, the manifest last, all flushed to the disk and
        checked against the manifest."""
        tmp.mkdir()
        record_choice(self.model)  # bf16="auto": the zip says which precision the run trains in
        self.model.save(tmp / "model.zip")
        self.model.save_replay_buffer(tmp / "replay_buffer.pkl")
        state = {
            "num_timesteps": self.num_timesteps,
            "n_timesteps": self.n_timesteps,
            "rng": rng_state(self.model),
            "monitor_seconds": monitor_clock.elapsed(self.model.env),  # the resumed run's Monitor clocks go on here
            "running_reward": None if self.running_reward is None else {
                "scores": list(self.running_reward.scores),
                "episode_count": self.running_reward.episode_count,
                "solved": self.running_reward.solved,
                "solved_step": self.running_reward.solved_step,
            },
        }
        with open(tmp / "state.pkl", "wb") as f:
            pickle.dump(state, f)
        (tmp / "monitor").mkdir()
        for csv in self.run_dir.glob("*.monitor.csv"):
            shutil.copy2(csv, tmp / "monitor" / csv.name)
        if self._pin:
            (tmp / PINNED).write_text(f"running reward first above {self.running_reward.solved_at} here\n")
        write_manifest(tmp)
        for path in [*tmp.rglob("*"), tmp]:
            fsync_path(path)
        verify_checkpoint(tmp)  # the manifest agrees with the files as written


def restore_callbacks(state: dict[str, Any], running_reward: RunningRewardCallback | None) -> None:
    saved = state.get("running_reward")
    if running_reward is not None and saved is not None:
        running_reward.scores.clear()
        running_reward.scores.extend(saved["scores"])
        running_reward.episode_count = saved["episode_count"]
        running_reward.solved = saved["solved"]
        running_reward.solved_step = saved.get("solved_step")
