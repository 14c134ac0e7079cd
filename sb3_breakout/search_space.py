"""
The search space of ``python -m sb3_breakout.tune``: which hyperparameters can be tuned and over
what values (``hyperparams/<algo>_search_space.yml``, narrowed by ``--search-space``), and how sampled
values go into an RL Zoo YAML entry (the epsilon callback's arguments included, the NatureCNN
``policy_kwargs`` kept, QR-DQN's ``n_quantiles`` written into them).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from sb3_breakout import config as cfg

#: The search space of DQN studies; ``--search-space`` changes parameters of it.
DEFAULT_SEARCH_SPACE = cfg.HYPERPARAMS_DIR / "dqn_search_space.yml"
#: Names of :class:`sb3_breakout.callbacks.LinearEpsilonCallback`'s arguments, tuned in its YAML entry.
EPSILON_KEYS = ("random_steps", "decay_steps", "initial_eps", "final_eps")
#: Names tuned inside the entry's ``policy_kwargs`` expression (QR-DQN's quantiles per action), and the
#: policy's default when the expression does not name them.
POLICY_KEYS = {"n_quantiles": 200}


def default_search_space(algo: str) -> Path:
    """``hyperparams/<algo>_search_space.yml``: the space every study of ``algo`` starts from."""
    return cfg.HYPERPARAMS_DIR / f"{cfg.check_algo(algo)}_search_space.yml"


@dataclass(frozen=True)
class Domain:
    """What values a tunable hyperparameter accepts."""

    integer: bool
    test: Callable[[float], bool]
    allowed: str
    #: A stricter test for the ends of a range (values allowed only as single choices, e.g. -1).
    range_test: Callable[[float], bool] | None = None


def tunable_domains() -> dict[str, Domain]:
    """
    The hyperparameters a search space may name: the numeric ones :func:`sb3_breakout.config.validate_entry`
    checks (except ``n_timesteps``, the trial budget, and DQN's ``exploration_*``, which the epsilon
    callback overrides), ``train_freq``, the epsilon callback's arguments, and QR-DQN's ``n_quantiles``.
    """
    skip = {"n_timesteps", "exploration_fraction", "exploration_initial_eps", "exploration_final_eps"}
    domains = {key: Domain(key in cfg.INTEGER_KEYS, test, allowed) for key, test, allowed in cfg.RANGES
               if key not in skip}
    domains["gradient_steps"] = Domain(True, lambda v: v >= 1 or v == -1, "an integer >= 1, or -1",
                                       range_test=lambda v: v >= 1)
    domains["train_freq"] = Domain(True, lambda v: v >= 1, "an integer >= 1")
    domains["random_steps"] = Domain(True, lambda v: v >= 0, "an integer >= 0 (agent steps)")
    domains["decay_steps"] = Domain(True, lambda v: v >= 1, "an integer >= 1 (agent steps)")
    domains["initial_eps"] = Domain(False, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    domains["final_eps"] = Domain(False, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    domains["n_quantiles"] = Domain(True, lambda v: v >= 1, "an integer >= 1 (QR-DQN only)")
    return domains


@dataclass(frozen=True)
class Param:
    """
    One parameter of the search space.

    ``kind`` is ``"range"`` (``low``..``high``, optionally ``log`` or ``step``), ``"choices"`` or
    ``"fixed"`` (``value``, not sampled but written into every trial's entry).
    """

    name: str
    kind: str
    integer: bool = False
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None

    def suggest(self, trial: optuna.Trial) -> Any:
        """This parameter's value in ``trial`` (sampled, or the retried trial's own)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "choices":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest value this parameter can take."""
        if self.kind == "fixed":
            return self.value, self.value
        if self.kind == "choices":
            return min(self.choices), max(self.choices)
        return self.low, self.high

    def spec(self) -> Any:
        """The YAML form: a value, a list of choices or ``{low, high[, log][, step]}``."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "choices":
            return list(self.choices)
        spec: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.step is not None:
            spec["step"] = self.step
        return spec


def _number(raw: Any, what: str, domain: Domain, where: str) -> int | float:
    """A YAML value as a number of the domain's type (``"1e-5"``, which YAML reads as text, included)."""
    value = raw
    if isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            value = raw
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise cfg.ConfigError(f"{what}={raw!r} in {where} is not allowed: must be {domain.allowed}")
    if domain.integer:
        if float(value) != int(value):
            raise cfg.ConfigError(f"{what}={raw!r} in {where} is not allowed: must be {domain.allowed}")
        return int(value)
    return float(value)


def parse_param(name: str, raw: Any, where: str, domains: dict[str, Domain] | None = None) -> Param | None:
    """
    One line of a search-space file as a :class:`Param` (None for ``null``: not tuned).

    :param where: the file, for messages.
    :raises ConfigError: an unknown name, a malformed spec, a value or range the hyperparameter does
        not accept.
    """
    domains = domains or tunable_domains()
    if name not in domains:
        raise cfg.ConfigError(f"unknown search-space parameter {name!r} in {where}: allowed are "
                              f"{', '.join(sorted(domains))}")
    domain = domains[name]
    what = f"search space {name}"
    if raw is None:
        return None
    if isinstance(raw, list):
        if not raw:
            raise cfg.ConfigError(f"{what} in {where}: a list of choices must not be empty")
        choices = tuple(_number(v, what, domain, where) for v in raw)
        for v in choices:
            if not domain.test(v):
                raise cfg.ConfigError(f"{what}={v!r} in {where} is not allowed: must be {domain.allowed}")
        if len(set(choices)) != len(choices):
            raise cfg.ConfigError(f"{what}={raw!r} in {where}: choices must be different")
        return Param(name, "choices", domain.integer, choices=choices)
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - {"low", "high", "log", "step"})
        if unknown or "low" not in raw or "high" not in raw:
            raise cfg.ConfigError(f"{what} in {where} must be {{low: A, high: B}} with optional log: true or "
                                  f"step: S, got {raw!r}")
        low, high = (_number(raw[end], f"{what} {end}", domain, where) for end in ("low", "high"))
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise cfg.ConfigError(f"{what} log={log!r} in {where} must be true or false")
        step = None if raw.get("step") is None else _number(raw["step"], f"{what} step", domain, where)
        test = domain.range_test or domain.test
        for end, v in (("low", low), ("high", high)):
            if not test(v):
                allowed = domain.allowed if domain.range_test is None else "an integer >= 1 (or -1 in a list)"
                raise cfg.ConfigError(f"{what} {end}={v!r} in {where} is not allowed: must be {allowed}")
        if low > high:
            raise cfg.ConfigError(f"{what} in {where}: low={low!r} is larger than high={high!r}")
        if log and low <= 0:
            raise cfg.ConfigError(f"{what} in {where}: a log range needs low > 0, got low={low!r}")
        if log and step is not None:
            raise cfg.ConfigError(f"{what} in {where}: use either log or step, not both")
        if step is not None and step <= 0:
            raise cfg.ConfigError(f"{what} in {where}: step={step!r} must be > 0")
        return Param(name, "range", domain.integer, low=low, high=high, log=log, step=step)
    if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
        value = _number(raw, what, domain, where)
        if not domain.test(value):
            raise cfg.ConfigError(f"{what}={value!r} in {where} is not allowed: must be {domain.allowed}")
        return Param(name, "fixed", domain.integer, value=value)
    raise cfg.ConfigError(f"{what}={raw!r} in {where} must be a value, a list of choices or "
                          "{low: A, high: B}")


def _read_space_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise cfg.ConfigError(f"cannot read search-space file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise cfg.ConfigError(f"search-space file {str(path)!r} is not text (YAML mapping names to ranges)") from None
    except yaml.YAMLError as exc:
        line = cfg.yaml_error_line(exc)
        raise cfg.ConfigError(f"search-space file {str(path)!r} is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise cfg.ConfigError(f"search-space file {str(path)!r} must map parameter names to ranges, "
                              f"got {type(data).__name__}")
    return data


def load_search_space(override: str | Path | None = None,
                      default: str | Path = DEFAULT_SEARCH_SPACE) -> dict[str, Param]:
    """
    The search space: ``default`` with the parameters of ``override`` replaced (a value fixes one,
    a range or list narrows or widens it, ``null`` takes it out of the search).

    :raises ConfigError: see :func:`parse_param`.
    """
    domains = tunable_domains()
    space: dict[str, Param] = {}
    for path in (default, override):
        if path is None:
            continue
        for name, raw in _read_space_file(path).items():
            param = parse_param(str(name), raw, repr(str(path)), domains)
            if param is None:
                space.pop(str(name), None)
            else:
                space[str(name)] = param
    return space


def space_spec(space: dict[str, Param]) -> dict[str, Any]:
    """The search space in its YAML form (stored with the study)."""
    return {name: param.spec() for name, param in space.items()}


def _callback_entries(entry: dict[str, Any]) -> list[Any]:
    value = entry.get("callback", [])
    return list(value) if isinstance(value, list) else [value]


def _callback_name(item: Any) -> str:
    return next(iter(item)) if isinstance(item, dict) else str(item)


def _epsilon_kwargs(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The epsilon callback's keyword arguments in ``entry`` (None if it has none)."""
    for item in _callback_entries(entry):
        if _callback_name(item).endswith("." + "LinearEpsilonCallback"):
            return dict((item[_callback_name(item)] or {}) if isinstance(item, dict) else {})
    return None


def entry_value(entry: dict[str, Any], name: str) -> Any:
    """A hyperparameter's value in ``entry``: epsilon arguments are read from the callback's entry."""
    if name in EPSILON_KEYS:
        from sb3_breakout.callbacks import LinearEpsilonCallback

        kwargs = _epsilon_kwargs(entry) or {}
        default = LinearEpsilonCallback().schedule
        return kwargs.get(name, getattr(default, name))
    if name in POLICY_KEYS:
        return (cfg.evaluated(entry, "policy_kwargs") or {}).get(name, POLICY_KEYS[name])
    return entry.get(name)


def check_space(space: dict[str, Param], entry: dict[str, Any]) -> None:
    """
    Refuse a search space that the entry cannot train with: epsilon parameters without the epsilon
    callback, ``batch_size`` above ``buffer_size``, ``final_eps`` above ``initial_eps``.

    :raises ConfigError: one line naming the parameters.
    """
    eps_names = [name for name in space if name in EPSILON_KEYS]
    if eps_names and _epsilon_kwargs(entry) is None:
        raise cfg.ConfigError(f"search space {eps_names[0]} needs "
                              "sb3_breakout.callbacks.LinearEpsilonCallback in the entry's callback list")

    def bounds(name: str, default: float) -> tuple[float, float]:
        if name in space:
            return space[name].bounds()
        value = entry_value(entry, name)
        return (value, value) if value is not None else (default, default)

    batch, buffer = bounds("batch_size", 32), bounds("buffer_size", 1_000_000)
    if batch[1] > buffer[0]:
        raise cfg.ConfigError(f"search space: batch_size up to {batch[1]} is larger than buffer_size from "
                              f"{buffer[0]}")
    final, initial = bounds("final_eps", 0.1), bounds("initial_eps", 1.0)
    if final[1] > initial[0]:
        raise cfg.ConfigError(f"search space: final_eps up to {final[1]} is larger than initial_eps from "
                              f"{initial[0]}")


def _with_kwarg(expression: str | dict[str, Any] | None, name: str, value: Any) -> str | dict[str, Any]:
    """
    Keyword arguments (``policy_kwargs``, ``replay_buffer_kwargs``) with ``name=value``: in RL Zoo's
    string form the number is replaced where the expression names it (``n_quantiles=200`` becomes
    ``n_quantiles=50``), else added to the dict.
    """
    if expression is None or isinstance(expression, dict):
        return {**(expression or {}), name: value}
    pattern = re.compile(rf"\b{name}\s*=\s*[^,)\s]+")
    if pattern.search(expression):
        return pattern.sub(f"{name}={value!r}", expression, count=1)
    return f"dict({expression}, {name}={value!r})"


def _sums_n_steps(buffer_kwargs: str | dict[str, Any] | None) -> bool:
    """Whether ``replay_buffer_kwargs`` sum n-step returns (with a discount of their own) or name a gamma."""
    if isinstance(buffer_kwargs, dict):
        return "gamma" in buffer_kwargs or int(buffer_kwargs.get("n_steps", 1)) > 1
    text = str(buffer_kwargs or "")
    steps = re.search(r"\bn_steps\s*=\s*(\d+)", text)
    return re.search(r"\bgamma\s*=", text) is not None or (steps is not None and int(steps.group(1)) > 1)


def apply_values(entry: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """
    A copy of ``entry`` with ``values`` merged in; epsilon arguments go into the epsilon callback,
    ``n_quantiles`` into ``policy_kwargs``, a sampled ``gamma`` also into ``replay_buffer_kwargs`` where
    they sum n-step returns with a discount of their own (the fast entries). With parallel games a
    sampled ``target_update_interval`` is rounded down to a multiple of ``n_envs`` (at least ``n_envs``):
    SB3 syncs every
    ``interval // n_envs`` vector steps, so this is the interval that trains, and ``best.yml`` says it.
    Values keep SB3's units (``train_freq`` in vector steps), so both trainers read the entry alike.
    """
    entry = copy.deepcopy(entry)
    eps = {k: v for k, v in values.items() if k in EPSILON_KEYS}
    entry.update({k: v for k, v in values.items() if k not in EPSILON_KEYS and k not in POLICY_KEYS})
    n_envs = int(entry.get("n_envs", 1))
    if n_envs > 1 and "target_update_interval" in values:
        entry["target_update_interval"] = max(int(values["target_update_interval"]) // n_envs, 1) * n_envs
    for name in POLICY_KEYS:
        if name in values:
            entry["policy_kwargs"] = _with_kwarg(entry.get("policy_kwargs"), name, values[name])
    buffer_kwargs = entry.get("replay_buffer_kwargs")
    if "gamma" in values and _sums_n_steps(buffer_kwargs):
        entry["replay_buffer_kwargs"] = _with_kwarg(buffer_kwargs, "gamma", values["gamma"])  # n-step sums
    if eps:
        callbacks = _callback_entries(entry)
        for i, item in enumerate(callbacks):
            name = _callback_name(item)
            if name.endswith(".LinearEpsilonCallback"):
                kwargs = dict(item[name] or {}) if isinstance(item, dict) else {}
                callbacks[i] = {name: {**kwargs, **eps}}
        entry["callback"] = callbacks
    return entry


def without_running_reward(entry: dict[str, Any]) -> dict[str, Any]:
    """
    ``entry`` without :class:`~sb3_breakout.callbacks.RunningRewardCallback`: in a trial it would print
    a line every 10,000 steps and end training once "solved", before the trial's last evaluation.
    """
    entry = copy.deepcopy(entry)
    if "callback" in entry:
        entry["callback"] = [c for c in _callback_entries(entry)
                             if not _callback_name(c).endswith(".RunningRewardCallback")]
    return entry
