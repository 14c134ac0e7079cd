"""
Values typed on the command line, checked as they are parsed: ``-params``/``--env-kwargs`` pairs
(RL Zoo's ``KEY:VALUE`` syntax), whole numbers written ``1e6``, and ``--device``. A bad value is one
line naming it and exit status 2 (through :class:`sb3_breakout.cli.OneLineArgumentParser`, or a
:class:`sb3_breakout.config.ConfigError`), never a traceback.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

import rl_zoo3.utils
import torch as th

from sb3_breakout import config as cfg

#: RL Zoo's linear schedule, ``lin_<initial value>``, for the keys that take one (DQN and QR-DQN: the
#: learning rate): taken as text, as the YAML writes it; :func:`sb3_breakout.config.validate_entry` then
#: checks the number. (RL Zoo's own ``-params`` evaluates it as Python, a NameError or SyntaxError, so
#: there it needs quotes: ``learning_rate:"'lin_1e-4'"``.)
SCHEDULE = re.compile(r"lin_\S+")
SCHEDULE_KEYS = frozenset({"learning_rate"})


class ParamsAction(argparse.Action):
    """
    RL Zoo's ``StoreDict`` (``KEY:VALUE ...``, each value evaluated as Python, with ``nan`` and ``inf``
    known so that the range checks can refuse them), but a value that is not Python is one line
    naming it (argparse's error, exit status 2) instead of a traceback, and the learning rate's
    ``lin_<value>`` needs no quotes (``-params`` only; ``--env-kwargs`` has no schedules).
    """

    NAMES = {**vars(rl_zoo3.utils), "nan": math.nan, "inf": math.inf}

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        result = {}
        for item in values:
            key, colon, text = item.partition(":")
            if not colon or not key.strip() or not text.strip():
                raise argparse.ArgumentError(self, f"{item!r} is not KEY:VALUE (e.g. buffer_size:50000)")
            if self.dest == "hyperparams" and key.strip() in SCHEDULE_KEYS and SCHEDULE.fullmatch(text.strip()):
                result[key.strip()] = text.strip()  # RL Zoo's schedule as its YAML writes it: lin_2.5e-4
                continue
            try:
                result[key.strip()] = eval(text, dict(self.NAMES))
            except Exception as exc:
                reason = " ".join(str(exc).split())
                raise argparse.ArgumentError(
                    self, f"{item!r}: {text!r} is not a Python value ({type(exc).__name__}: {reason}); "
                    "write text in quotes, e.g. policy:\"'CnnPolicy'\"") from None
        setattr(namespace, self.dest, result)


def whole_number(text: str) -> int:
    """An integer flag that also takes ``1e6`` / ``1_000_000`` (refuses ``2.5``, ``nan``, ``abc``)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def check_device(device: str) -> None:
    """``--device``: ``auto`` or a torch device this machine has (``cuda`` needs a GPU torch can see)."""
    if device == "auto":
        return
    try:
        kind = th.device(device).type
    except (RuntimeError, TypeError):
        raise cfg.ConfigError(f"--device {device!r} is not allowed: auto, cpu, cuda or cuda:N") from None
    if kind == "cuda" and not th.cuda.is_available():
        raise cfg.ConfigError(f"--device {device!r}: torch sees no CUDA GPU on this machine; use auto or cpu")
    if kind == "cuda" and th.device(device).index is not None and th.device(device).index >= th.cuda.device_count():
        raise cfg.ConfigError(f"--device {device!r}: this machine has {th.cuda.device_count()} CUDA GPU(s)")
    if kind == "mps" and not th.backends.mps.is_available():
        raise cfg.ConfigError(f"--device {device!r}: torch sees no MPS device on this machine; use auto or cpu")
    if kind not in ("cpu", "cuda", "mps"):
        raise cfg.ConfigError(f"--device {device!r} is not allowed: auto, cpu, cuda or cuda:N")
