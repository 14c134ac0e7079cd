"""
A checkpoint on disk: its folder, its manifest, checking it and reading it back.

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
  buffer (7 GB at 1M transitions) only to throw it away and load it again;
- ``pinned``: present in the checkpoint written when the running reward first passed ``solved_at``
  (kept whatever ``keep`` says).

This module is what every tool that reads checkpoints shares (``train --resume``, ``runs``,
``evaluate --load-checkpoint``, the chaos script); writing them is
:class:`sb3_breakout.checkpoint.CheckpointCallback`'s job.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoints"
STEP_PREFIX = "step_"  # a checkpoint folder is checkpoints/step_<N>
FILES = ("model.zip", "replay_buffer.pkl", "state.pkl")
MANIFEST = "manifest.json"
#: a file in a checkpoint folder that exempts it from the rotation (the checkpoint of the solved step)
PINNED = "pinned"
_CHUNK = 16 << 20  # bytes read at a time for the checksums


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


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


def fsync_path(path: Path) -> None:
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
