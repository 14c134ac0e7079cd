"""
Checkpoints that survive a kill: everything needed to continue a run, written atomically.

A checkpoint is a folder ``<run>/checkpoints/step_<N>/`` holding

- ``model.zip``: SB3's save -- policy and target network, Adam's state, the step counter, ``_n_calls``
  (target-update phase), the exploration schedule;
- ``replay_buffer.pkl``: SB3's ``save_replay_buffer`` (the compact form when the buffer is a
  :class:`~sb3_breakout.buffers.FrameStackReplayBuffer`);
- ``state.pkl``: the callbacks' state (running reward: episode count and last scores), the RNG
  states (python, numpy, torch, the action space's), the step count and the Monitor clocks
  (:mod:`sb3_breakout.monitor_clock`);
- ``monitor/``: copies of the run's Monitor CSVs as they were at step N;
- ``manifest.json``: the size and CRC-32 of the three files above, written last, so that a resume
  checks them by streaming each file once in constant memory instead of unpickling the replay
  buffer (7 GB at 1M transitions) only to throw it away and load it again.

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

import json
import os
import pickle
import random
import shutil
import signal
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_breakout import monitor_clock, zoo_links
from sb3_breakout.atomic_write import DISK_FULL_ERRNOS, describe_write_error, is_disk_full  # noqa: F401 (shared)
from sb3_breakout.callbacks import RunningRewardCallback
from sb3_breakout.precision import record_choice

CHECKPOINT_DIR = "checkpoints"
STEP_PREFIX = "step_"  # a checkpoint folder is checkpoints/step_<N>
FILES = ("model.zip", "replay_buffer.pkl", "state.pkl")
MANIFEST = "manifest.json"
#: a file in a checkpoint folder that exempts it from the rotation (the checkpoint of the solved step)
PINNED = "pinned"
_CHUNK = 16 << 20  # bytes read at a time for the checksums


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


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


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """The folder of the checkpoint at agent step ``step``: ``<run>/checkpoints/step_<step>``."""
    return checkpoint_root(run_dir) / f"{STEP_PREFIX}{step}"


def checkpoint_step(checkpoint: str | Path) -> int:
    """The agent step a checkpoint folder ``step_<N>`` was written at (``N``)."""
    return int(Path(checkpoint).name[len(STEP_PREFIX):])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (unfinished ``.tmp`` folders are not listed)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX):].isdigit()]
    return sorted(found, key=checkpoint_step)


def checkpoint_models(run_dir: str | Path) -> dict[int, Path]:
    """The ``model.zip`` of each checkpoint of a run that has one, by step."""
    return {checkpoint_step(c): c / "model.zip" for c in list_checkpoints(run_dir) if (c / "model.zip").is_file()}


def model_is_whole(checkpoint: Path) -> bool:
    """Whether a checkpoint's ``model.zip`` is whole (:func:`verify_checkpoint` of that file alone)."""
    try:
        verify_checkpoint(checkpoint, files=("model.zip",))
        return True
    except (CheckpointError, OSError):  # OSError: a manifest or model that cannot be read
        return False


def intact_models(run_dir: str | Path) -> dict[int, Path]:
    """
    The ``model.zip`` of each checkpoint whose model is whole (:func:`model_is_whole`), by step. What
    gets RL Zoo's names: a damaged model under ``rl_model_<N>_steps.zip`` would be what
    ``--load-last-checkpoint`` picks. Only the models are read (8-60 MB each), not the replays.
    """
    return {step: model for step, model in checkpoint_models(run_dir).items() if model_is_whole(model.parent)}


def file_digest(file: Path) -> dict[str, int]:
    """Size and CRC-32 of a file, read in chunks (constant memory)."""
    crc = 0
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return {"bytes": file.stat().st_size, "crc32": crc}


def write_manifest(folder: Path) -> None:
    """Record the size and CRC-32 of each checkpoint file in ``folder/manifest.json`` (written last:
    a checkpoint folder without a whole manifest is never renamed into place)."""
    (folder / MANIFEST).write_text(json.dumps({name: file_digest(folder / name) for name in FILES}, indent=1))


def _fsync_path(path: Path) -> None:
    """Flush a file's or a folder's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_checkpoint(path: Path, files: tuple[str, ...] = FILES) -> None:
    """
    Check that every file of a checkpoint is there and intact, without loading the model: against
    ``manifest.json`` (sizes and CRC-32) when the checkpoint has one, else by reading the zip's CRCs
    and unpickling the pickles (checkpoints written before manifests existed).

    :param files: the files to check (default: all of them; ``("model.zip",)`` for the model alone).
    :raises CheckpointError: naming the missing, truncated or corrupt file.
    """
    for name in files:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} is missing")
    if (path / MANIFEST).is_file():
        try:
            expected = json.loads((path / MANIFEST).read_text())
            entries = {name: (int(expected[name]["bytes"]), int(expected[name]["crc32"])) for name in files}
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint file {path / MANIFEST} is corrupt ({type(exc).__name__})") from None
        for name, (size, crc) in entries.items():
            actual = file_digest(path / name)
            if actual["bytes"] != size:
                raise CheckpointError(
                    f"checkpoint file {path / name} is truncated or corrupt ({actual['bytes']} bytes, expected {size})"
                )
            if actual["crc32"] != crc:
                raise CheckpointError(f"checkpoint file {path / name} is truncated or corrupt (CRC-32 mismatch)")
        return
    if "model.zip" in files:
        try:
            with zipfile.ZipFile(path / "model.zip") as archive:
                bad = archive.testzip()
        except Exception as exc:  # any failure to read the zip (BadZipFile, zlib.error, OSError...) means damaged
            raise CheckpointError(f"checkpoint file {path / 'model.zip'} is truncated or corrupt ({exc})") from None
        if bad is not None:
            raise CheckpointError(f"checkpoint file {path / 'model.zip'} is corrupt (member {bad})")
    for name in ("replay_buffer.pkl", "state.pkl"):
        if name not in files:
            continue
        try:
            with open(path / name, "rb") as f:
                pickle.load(f)
        except Exception as exc:  # any unpickling failure means the file is damaged
            raise CheckpointError(
                f"checkpoint file {path / name} is truncated or corrupt ({type(exc).__name__})"
            ) from None


def recover_replaced(run_dir: str | Path) -> list[Path]:
    """
    Put back a checkpoint that a kill caught in the middle of being saved again at the same step: the
    old ``step_N`` was moved aside to ``step_N.replaced`` and the new one was not yet renamed into its
    place, so neither name is a checkpoint. The old copy is renamed back (it is whole: it was a
    checkpoint); a later save at that step replaces it again.

    :return: the checkpoints put back.
    """
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    recovered = []
    for moved in sorted(root.glob(f"{STEP_PREFIX}*.replaced")):
        final = root / moved.name[: -len(".replaced")]
        if moved.is_dir() and final.name[len(STEP_PREFIX):].isdigit() and not final.exists():
            os.rename(moved, final)
            recovered.append(final)
    return recovered


def latest_valid_checkpoint(run_dir: str | Path) -> tuple[Path, list[str]]:
    """
    The newest checkpoint that verifies, and one warning line per newer one that did not (a checkpoint
    caught between the two renames of a same-step save is put back first: :func:`recover_replaced`).

    :raises CheckpointError: the run has no checkpoint, or none verifies.
    """
    recover_replaced(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise CheckpointError(
            f"no checkpoint in {checkpoint_root(run_dir)} (was the run started with --save-freq > 0?)"
        )
    skipped: list[str] = []
    for path in reversed(checkpoints):
        try:
            verify_checkpoint(path)
            return path, skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    raise CheckpointError(f"no usable checkpoint in {checkpoint_root(run_dir)}: " + "; ".join(skipped))


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
        _fsync_path(root)
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
            _fsync_path(path)
        verify_checkpoint(tmp)  # the manifest agrees with the files as written


def restore_run_files(checkpoint: Path, run_dir: Path) -> None:
    """Put the Monitor CSVs back as they were at the checkpoint (rows written after it are dropped)."""
    for csv in (checkpoint / "monitor").glob("*.monitor.csv"):
        tmp = run_dir / f".{csv.name}.tmp"
        shutil.copy2(csv, tmp)
        os.replace(tmp, run_dir / csv.name)


def load_state(checkpoint: Path) -> dict[str, Any]:
    with open(checkpoint / "state.pkl", "rb") as f:
        return pickle.load(f)


def saved_target(checkpoint: Path) -> int | None:
    """The agent steps the process that wrote ``checkpoint`` trained to; None for checkpoints of older
    versions (or an unreadable state, which :func:`verify_checkpoint` names)."""
    try:
        target = load_state(checkpoint).get("n_timesteps")
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        return None
    return int(target) if target else None


def saved_schedule(checkpoint: Path) -> dict[str, Any]:
    """
    The ``train_freq`` and ``gradient_steps`` the checkpoint's model trained with (SB3's units), read
    from its zip's ``data`` without loading the network. A resumed run goes on with these whatever its
    ``config.yml`` says: runs of earlier versions with parallel games were trained with a
    ``train_freq`` rewritten from the file's (:mod:`sb3_breakout.parallel`), and resume as they were trained.

    :return: ``{"train_freq": [N, "step"|"episode"], "gradient_steps": G}``, or ``{}`` when the zip
        does not say (the run's ``config.yml`` is used then).
    """
    from stable_baselines3.common.save_util import json_to_data

    try:
        with zipfile.ZipFile(checkpoint / "model.zip") as archive:
            data = json.loads(archive.read("data"))
        freq = json_to_data(json.dumps({"train_freq": data["train_freq"]}))["train_freq"]
        return {"train_freq": [int(freq.frequency), str(freq.unit.value)],
                "gradient_steps": int(data["gradient_steps"])}
    except (OSError, KeyError, ValueError, AttributeError, TypeError, zipfile.BadZipFile):
        return {}


def restore_callbacks(state: dict[str, Any], running_reward: RunningRewardCallback | None) -> None:
    saved = state.get("running_reward")
    if running_reward is not None and saved is not None:
        running_reward.scores.clear()
        running_reward.scores.extend(saved["scores"])
        running_reward.episode_count = saved["episode_count"]
        running_reward.solved = saved["solved"]
        running_reward.solved_step = saved.get("solved_step")
