"""
RL Zoo's names of a run's checkpoints: ``<run>/rl_model_<N>_steps.zip``.

RL Zoo's tools (``rl_zoo3.enjoy``, ``rl_zoo3.record_video`` with ``--load-checkpoint N`` or
``--load-last-checkpoint``, ``rl_zoo3.utils.get_model_path``) look for that name, the one RL Zoo's own
checkpoint callback writes; this package keeps its checkpoints in ``checkpoints/step_<N>/``
(:mod:`sb3_breakout.checkpoint`: model, replay, state, manifest, written atomically). Each checkpoint's
``model.zip`` therefore also gets RL Zoo's name, as a *hard link*: the same file, no second copy on
disk, and a link that never dangles. Where the filesystem refuses hard links (``checkpoints/`` on
another disk) it is a relative symbolic link. Why not a copy: 8-25 MB per checkpoint for nothing; why
not a symbolic link everywhere: it dangles once its checkpoint is rotated away, and RL Zoo's
``--load-last-checkpoint`` would pick it and fail.

The name is made after the checkpoint folder is renamed into place (under a temporary name first, then
``os.replace``), removed just before its folder is rotated away, and put right at the start of every
training process (:func:`sync`: a name left by a kill between the two removals goes, a missing one
is made). The names are not part of a checkpoint: not in its manifest, not counted by ``keep``. A
model's disk space is freed when both of its names are gone. A name that cannot be made or removed
costs one warning line on stderr; the checkpoint is kept and training goes on.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from sb3_breakout.atomic_write import describe_write_error

#: RL Zoo's name of the checkpoint at step N (its CheckpointCallback's; rl_zoo3.utils.get_model_path)
PREFIX, SUFFIX = "rl_model_", "_steps.zip"
#: errors of a filesystem that refuses a hard link (none, another filesystem, too many links): a symlink then
_NO_HARD_LINK = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def zoo_name(run_dir: str | Path, step: int) -> Path:
    """RL Zoo's name of the checkpoint at agent step ``step``: ``<run>/rl_model_<step>_steps.zip``."""
    return Path(run_dir) / f"{PREFIX}{step}{SUFFIX}"


def zoo_name_step(path: str | Path) -> int | None:
    """The step of a name ``rl_model_<N>_steps.zip`` (``N``); None for any other name."""
    name = Path(path).name
    if name.startswith(PREFIX) and name.endswith(SUFFIX):
        digits = name[len(PREFIX): -len(SUFFIX)]
        if digits.isascii() and digits.isdigit():
            return int(digits)
    return None


def link(run_dir: str | Path, step: int, model: Path) -> Path:
    """
    Give ``model`` (a checkpoint's ``model.zip``) RL Zoo's name of ``step``: a hard link (the same file:
    no copy), or a relative symbolic link where the filesystem refuses hard links. Made under a temporary
    name, then renamed over the name (an earlier link of the same step, to a model saved again since, is
    replaced at once).

    :return: the name.
    :raises OSError: the link cannot be made (nothing is left under the temporary name).
    """
    name = zoo_name(run_dir, step)
    tmp = name.with_name(f".{name.name}.tmp")  # not matched by RL Zoo's glob rl_model_*_steps.zip
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(model, tmp)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINK:
                raise
            os.symlink(os.path.relpath(model, name.parent), tmp)
        os.replace(tmp, name)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return name


def names_model(name: Path, model: Path) -> bool:
    """Whether ``name`` is the file ``model`` (False for a dangling symlink or a missing file)."""
    try:
        return os.path.samefile(name, model)
    except OSError:
        return False


def _warn(what: str, exc: OSError, then: str = "the checkpoint is kept and training goes on") -> None:
    print(f"warning: {what}: {describe_write_error(exc)}; {then}", file=sys.stderr, flush=True)


def name_checkpoint(run_dir: str | Path, step: int, model: Path) -> None:
    """
    :func:`link`, for a checkpoint just renamed into place: a failure is one warning line, and a name
    left from an earlier save at the same step (a model that is no longer the checkpoint) is removed.
    """
    try:
        link(run_dir, step, model)
    except OSError as exc:
        stale = zoo_name(run_dir, step)
        if not names_model(stale, model):
            try:
                stale.unlink(missing_ok=True)
            except OSError:
                pass
        _warn(f"RL Zoo's name {stale} of {model} not made", exc)


def remove_name(run_dir: str | Path, step: int) -> None:
    """Remove RL Zoo's name of ``step`` (before its checkpoint folder goes); a failure is a warning line."""
    try:
        zoo_name(run_dir, step).unlink(missing_ok=True)
    except OSError as exc:
        _warn(f"{zoo_name(run_dir, step)} not removed", exc, "the next start of training removes it; "
              "training goes on")


def sync(run_dir: str | Path, models: dict[int, Path]) -> None:
    """
    Make RL Zoo's names in ``run_dir`` agree with its checkpoints: remove those of no checkpoint (a process
    killed between the two removals of a rotation, a folder removed by hand) and link those missing or
    naming another file (a kill between a same-step save's rename and its link). Left-over temporary
    links go too. A failure is a warning line.

    :param models: the ``model.zip`` by step of each checkpoint to be named; training passes those whose
        model is whole (:func:`sb3_breakout.checkpoint.intact_models`), so a damaged one loses its name.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    try:
        names = [p for p in run_dir.iterdir() if zoo_name_step(p) is not None
                 or (p.name.startswith(f".{PREFIX}") and p.name.endswith(f"{SUFFIX}.tmp"))]
    except OSError as exc:
        _warn(f"RL Zoo's checkpoint names in {run_dir} not checked", exc)
        return
    for path in names:
        step = zoo_name_step(path)
        if step is None or step not in models:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                _warn(f"{path} (of no whole checkpoint) not removed", exc, "training goes on")
    for step, model in models.items():
        if not names_model(zoo_name(run_dir, step), model):
            try:
                link(run_dir, step, model)
            except OSError as exc:
                _warn(f"RL Zoo's name {zoo_name(run_dir, step)} of {model} not made", exc)
