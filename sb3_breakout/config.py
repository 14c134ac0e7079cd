"""Read one entry of an RL Zoo hyperparameter YAML: the single place where configuration is chosen."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rl_zoo3.exp_manager
import yaml
from rl_zoo3.utils import ALGOS, get_class_by_name

from sb3_breakout.wrappers import PROFILES, breakout_preprocessing

#: ``hyperparams/`` beside the package (an editable install or a clone).
HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "hyperparams"
#: The profile whose entry is named by the env id alone.
DEFAULT_PROFILE = "deepmind"


class ConfigError(ValueError):
    """Bad user input: the message is one line that names the bad value and what is allowed."""


#: The algorithms this package trains (RL Zoo's names): each has ``hyperparams/<algo>.yml``, and its
#: class comes from RL Zoo's ``ALGOS`` table (SB3's DQN, sb3-contrib's QRDQN) unless :data:`LEARNERS`
#: names this package's own. A value-based learner with the same pieces (replay buffer,
#: ``exploration_rate``, target network) is one more name here and one more YAML file.
ALGORITHMS: tuple[str, ...] = ("dqn", "qrdqn")

#: This package's classes for some algorithms, as ``module:Class``: they save the same zips as RL Zoo's
#: (``rl_zoo3 enjoy`` loads them) and train faster (:mod:`sb3_breakout.qrdqn` says why).
LEARNERS: dict[str, str] = {"qrdqn": "sb3_breakout.qrdqn:QRDQN"}


#: Learners that replace ``policy_kwargs["optimizer_kwargs"]`` when ``optimizer_class`` is not given
#: (sb3-contrib's ``QRDQN.__init__`` sets Adam with ``eps=0.01 / batch_size`` then, dropping every other
#: optimizer keyword silently), and what they put in its place: a new run or study of such a learner
#: (``sb3_breakout.train``, ``tune``) must name its optimizer class if it gives optimizer keywords. Not
#: patched in this package's subclass: ``rl_zoo3.train`` builds sb3-contrib's class from the same YAML,
#: so the YAML itself must say it (the shipped entries do, tests/test_qrdqn.py checks both trainers).
OPTIMIZER_CLASS_REQUIRED: dict[str, str] = {"qrdqn": "dict(eps=0.01 / batch_size)"}


def learner_class(algo: str) -> type:
    """The class that trains and loads ``algo``: :data:`LEARNERS`' entry, else RL Zoo's ``ALGOS``."""
    check_algo(algo)
    if algo in LEARNERS:
        module, name = LEARNERS[algo].split(":")
        return getattr(importlib.import_module(module), name)
    return ALGOS[algo]


@contextlib.contextmanager
def zoo_learners() -> Iterator[None]:
    """
    While inside, RL Zoo's ``ALGOS`` table gives :func:`learner_class` for this package's algorithms.

    RL Zoo's ``ExperimentManager`` builds and loads the learner through that module-level table, with
    no argument to pass a class; the table is put back as it was on the way out.
    """
    saved = {algo: ALGOS[algo] for algo in ALGORITHMS}
    ALGOS.update({algo: learner_class(algo) for algo in ALGORITHMS})
    try:
        yield
    finally:
        ALGOS.update(saved)


def check_algo(algo: str) -> str:
    """``algo`` if this package trains it, else a ConfigError naming the choices."""
    if algo not in ALGORITHMS:
        raise ConfigError(f"--algo {algo!r} is not allowed: choose one of {', '.join(ALGORITHMS)} "
                          f"(the algorithms with a file in {HYPERPARAMS_DIR.name}/)")
    return algo


def default_config(algo: str) -> Path:
    """``hyperparams/<algo>.yml`` of this checkout; a ConfigError for an algorithm without one."""
    return HYPERPARAMS_DIR / f"{check_algo(algo)}.yml"


def entry_name(env_id: str, profile: str | None) -> str:
    """YAML key of a profile: the env id for ``deepmind`` (RL Zoo reads that one), else ``<env id>-<profile>``."""
    return env_id if profile in (None, DEFAULT_PROFILE) else f"{env_id}-{profile}"


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """`` at line N`` where PyYAML knows the line of the error, else the empty string (for one-line errors)."""
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The whole YAML file as a dict of entries."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not a text file: give a YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = yaml_error_line(exc)
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must map entry names to hyperparameters, "
                          f"got {type(data).__name__}")
    for name in data:
        if not isinstance(name, str):
            raise ConfigError(f"config file {str(path)!r}: the entry name {name!r} is not allowed: names are "
                              "text, such as BreakoutNoFrameskip-v4 or BreakoutNoFrameskip-v4-fast")
    return data


def profiles_in(data: dict[str, Any], env_id: str) -> list[str]:
    """The profiles a config file defines for ``env_id``."""
    names = [DEFAULT_PROFILE] if env_id in data else []
    return names + [key[len(env_id) + 1 :] for key in data if key.startswith(f"{env_id}-")]


def env_ids_in(data: dict[str, Any]) -> list[str]:
    """The env ids a config file has entries for: the entry names that are not ``<another name>-<profile>``."""
    return [name for name in data if not any(name.startswith(f"{other}-") for other in data if other != name)]


def load_entry(path: str | Path, env_id: str, profile: str | None = None) -> dict[str, Any]:
    """
    The hyperparameters of ``env_id`` and ``profile`` in the YAML at ``path`` (a fresh dict).

    :raises ConfigError: unreadable file, no such entry.
    """
    data = read_yaml(path)
    key = entry_name(env_id, profile)
    if key not in data:
        known = profiles_in(data, env_id)
        if not known:  # no entry for this env at all: name the envs the file has
            envs = ", ".join(env_ids_in(data)) or "none"
            raise ConfigError(f"no entry for env {env_id!r} in {str(path)!r}; env ids there: {envs}")
        raise ConfigError(f"no entry {key!r} in {str(path)!r} (profile {profile or DEFAULT_PROFILE!r}); "
                          f"profiles there: {', '.join(known)}")
    entry = data[key]
    if not isinstance(entry, dict):
        raise ConfigError(f"entry {key!r} in {str(path)!r} must be a mapping of hyperparameters")
    return dict(entry)


# ----------------------------------------------------------------------------------------- checks
#: Keys RL Zoo reads itself; every other key goes to the algorithm's constructor.
ZOO_KEYS = {
    "n_timesteps", "policy", "policy_kwargs", "env_wrapper", "vec_env_wrapper", "frame_stack", "n_envs",
    "callback", "env_kwargs", "normalize", "monitor_kwargs", "replay_buffer_class", "replay_buffer_kwargs",
}
#: (key, test, what is allowed) for the numeric hyperparameters this package's learners take.
RANGES: list[tuple[str, Any, str]] = [
    ("n_timesteps", lambda v: v >= 0, "a number >= 0"),
    ("learning_rate", lambda v: v > 0, "a number > 0"),
    ("gamma", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("buffer_size", lambda v: v >= 1, "an integer >= 1"),
    ("batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("learning_starts", lambda v: v >= 0, "an integer >= 0"),
    ("gradient_steps", lambda v: v >= 1 or v == -1, "an integer >= 1, or -1"),
    ("target_update_interval", lambda v: v >= 1, "an integer >= 1"),
    ("max_grad_norm", lambda v: v > 0, "a number > 0"),
    ("tau", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("exploration_fraction", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("exploration_initial_eps", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("exploration_final_eps", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("frame_stack", lambda v: v >= 1, "an integer >= 1"),
    ("n_envs", lambda v: v >= 1, "an integer >= 1"),
]
INTEGER_KEYS = {"buffer_size", "batch_size", "learning_starts", "gradient_steps", "target_update_interval",
                "frame_stack", "n_envs"}


def evaluated(entry: dict[str, Any], key: str) -> Any:
    """``entry[key]`` as RL Zoo passes it on (strings are evaluated; already checked to evaluate)."""
    value = entry.get(key)
    return eval(value, vars(rl_zoo3.exp_manager)) if isinstance(value, str) else value


def _check_n_step(entry: dict[str, Any]) -> None:
    """
    n-step returns: SB3 ignores a top-level ``n_steps`` when ``replay_buffer_class`` is set (with a
    warning only), and the buffer's own ``gamma`` must be the learner's, or the targets mix two discounts.
    """
    n_steps = entry.get("n_steps", 1)
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise ConfigError(f"n_steps={n_steps!r} is not allowed: must be an integer >= 1")
    if n_steps > 1 and entry.get("replay_buffer_class") is not None:
        raise ConfigError(f"n_steps={n_steps} is ignored by SB3 when replay_buffer_class is set; "
                          f"put it in replay_buffer_kwargs: dict(n_steps={n_steps}, gamma=<gamma>)")
    kwargs = evaluated(entry, "replay_buffer_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"replay_buffer_kwargs={kwargs!r} must be a mapping")
    gamma = entry.get("gamma", 0.99)
    if kwargs.get("n_steps", 1) != 1 and kwargs.get("gamma", 0.99) != gamma:
        raise ConfigError(f"replay_buffer_kwargs gamma={kwargs.get('gamma', 0.99)!r} differs from gamma={gamma!r}; "
                          "the n-step sums must use the learner's discount")


def _policy_class(entry: dict[str, Any], algo: str) -> Any:
    policy = entry.get("policy", "CnnPolicy")
    if isinstance(policy, str) and "." not in policy:
        return getattr(learner_class(algo), "policy_aliases", {}).get(policy)
    return resolve(policy, "policy") if isinstance(policy, str) else policy


def _check_policy_kwargs(entry: dict[str, Any], algo: str, resumed: bool = False) -> None:
    """
    ``policy_kwargs`` keys the algorithm's policy takes (``n_quantiles`` is QR-DQN's, not DQN's),
    ``optimizer_kwargs`` only with ``optimizer_class`` where the learner would drop them
    (:data:`OPTIMIZER_CLASS_REQUIRED`), and ``n_quantiles`` an integer >= 1.
    """
    kwargs = evaluated(entry, "policy_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"policy_kwargs={kwargs!r} must be a mapping")
    policy_class = _policy_class(entry, algo)
    if policy_class is not None:
        allowed = set(inspect.signature(policy_class.__init__).parameters) - {"self", "observation_space",
                                                                             "action_space", "lr_schedule"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ConfigError(f"policy_kwargs {unknown[0]!r} is not taken by {algo}'s {policy_class.__name__}: "
                              f"allowed are {', '.join(sorted(allowed))}")
    if (not resumed and algo in OPTIMIZER_CLASS_REQUIRED and "optimizer_kwargs" in kwargs
            and "optimizer_class" not in kwargs):
        raise ConfigError(
            f"policy_kwargs optimizer_kwargs={kwargs['optimizer_kwargs']!r} without optimizer_class: {algo}'s "
            f"learner would replace it by {OPTIMIZER_CLASS_REQUIRED[algo]}, not fused; allowed: name the optimizer "
            "too, optimizer_class=importlib.import_module('torch.optim').Adam, or leave optimizer_kwargs out "
            "(the replacement, as runs and studies of such YAML before 2026-12-02 trained)")
    if "n_quantiles" in kwargs:
        n = kwargs["n_quantiles"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"policy_kwargs n_quantiles={n!r} is not allowed: must be an integer >= 1")


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve(name: Any, what: str) -> Any:
    """Import ``package.module.Name``; a ConfigError names ``what`` and the path if it does not exist."""
    if not isinstance(name, str) or "." not in name:
        raise ConfigError(f"{what} {name!r} must be a dotted path such as package.module.Name")
    try:
        return get_class_by_name(name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{what} {name!r} cannot be imported: no such module or class") from None


def named_entries(value: Any, what: str) -> list[tuple[str, dict[str, Any]]]:
    """RL Zoo's ``name`` / ``[name, {name: kwargs}, ...]`` lists as (name, kwargs) pairs."""
    items = value if isinstance(value, list) else [value]
    pairs = []
    for item in items:
        if isinstance(item, dict):
            if len(item) != 1:
                raise ConfigError(f"{what} entry {item!r} must map one class path to its keyword arguments")
            name, kwargs = next(iter(item.items()))
            pairs.append((name, kwargs or {}))
        else:
            pairs.append((item, {}))
    return pairs


def _check_call(obj: Any, kwargs: dict[str, Any], what: str, first: Any = ()) -> None:
    try:
        inspect.signature(obj).bind(*first, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def validate_entry(entry: dict[str, Any], algo: str = "dqn", resumed: bool = False) -> None:
    """
    Refuse a hyperparameter entry that cannot train, before anything is built or written.

    Checks: unknown keys (neither RL Zoo's nor the algorithm's), types and ranges of the numeric
    keys, ``batch_size <= buffer_size``, importable class paths in ``env_wrapper``, ``callback``,
    ``policy`` and ``replay_buffer_class``, a ``policy_kwargs`` expression RL Zoo can evaluate, and
    the callbacks' own checks (epsilon in [0, 1], final <= initial, ...) by building them.

    :param resumed: the entry is a run's ``config.yml`` read by ``--resume``: what only shapes how a new
        learner is built (an optimizer given without its class, :data:`OPTIMIZER_CLASS_REQUIRED`) is not
        refused there, as the run's checkpoint brings the optimizer it trained with.
    :raises ConfigError: one line naming the key, the bad value and what is allowed.
    """
    learner = learner_class(algo)  # refuses an algorithm this package does not train
    parameters = inspect.signature(learner.__init__).parameters
    algo_keys = set(parameters) - {"self", "env", "policy"}
    unknown = sorted(set(entry) - ZOO_KEYS - algo_keys)
    if unknown:
        raise ConfigError(f"unknown hyperparameter {unknown[0]!r} for {algo}: allowed are RL Zoo's keys and "
                          f"{learner.__name__}'s arguments")
    check_finite(entry)
    check_mappings(entry)
    for key, test, allowed in RANGES:
        if key not in entry:
            continue
        value = entry[key]
        if value is None and key in parameters and parameters[key].default is None:
            continue  # None is the algorithm's own default (QR-DQN's max_grad_norm: no clipping)
        if key == "learning_rate" and isinstance(value, str) and value.startswith("lin_"):
            value = _float_or_none(value[4:])  # RL Zoo's linear schedule "lin_<initial value>"
        wrong_type = not _is_number(value) or (key in INTEGER_KEYS and float(value) != int(value))
        if wrong_type or not test(value):
            raise ConfigError(f"{key}={entry[key]!r} is not allowed: must be {allowed}")
    if "train_freq" in entry:
        freq = entry["train_freq"]
        count = freq[0] if isinstance(freq, list) and len(freq) == 2 and freq[1] in ("step", "episode") else freq
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"train_freq={freq!r} is not allowed: must be an integer >= 1 or [n, 'step'|'episode']")
    if entry.get("batch_size", 0) > entry.get("buffer_size", float("inf")):
        raise ConfigError(f"batch_size={entry['batch_size']} is larger than buffer_size={entry['buffer_size']}")

    if "policy" in entry and not isinstance(entry["policy"], str):
        raise ConfigError(f"policy={entry['policy']!r} must be a policy name such as CnnPolicy or a class path")
    if isinstance(entry.get("policy"), str):
        aliases = getattr(learner, "policy_aliases", {})
        if "." in entry["policy"]:
            resolve(entry["policy"], "policy")
        elif entry["policy"] not in aliases:
            raise ConfigError(f"policy={entry['policy']!r} is not a {learner.__name__} policy: choose one of "
                              f"{', '.join(sorted(aliases))} or a class path")
    for key in ("policy_kwargs", "replay_buffer_class", "replay_buffer_kwargs"):
        if isinstance(entry.get(key), str):
            try:  # evaluated where and as RL Zoo evaluates it
                eval(entry[key], vars(rl_zoo3.exp_manager))
            except Exception as exc:
                raise ConfigError(f"{key} {entry[key]!r} cannot be evaluated: {type(exc).__name__}: {exc}") from None
    _check_policy_kwargs(entry, algo, resumed)
    _check_n_step(entry)
    for name, kwargs in named_entries(entry.get("env_wrapper", []), "env_wrapper"):
        wrapper = resolve(name, "env_wrapper")
        _check_call(wrapper, kwargs, f"env_wrapper {name}", first=(None,))
        if wrapper is breakout_preprocessing and kwargs.get("profile", "deepmind") not in PROFILES:
            raise ConfigError(f"env_wrapper {name}: unknown profile {kwargs['profile']!r}; "
                              f"choose one of {', '.join(PROFILES)}")
    for name, kwargs in named_entries(entry.get("callback", []), "callback"):
        callback_class = resolve(name, "callback")
        try:
            callback_class(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"callback {name}: {exc}") from None


# ------------------------------------------------------------------ generic value checks (issue 17)
def check_mappings(entry: dict[str, Any]) -> None:
    """
    ``env_kwargs`` and ``monitor_kwargs`` (RL Zoo's keys of keyword arguments), when given, are mappings.

    :raises ConfigError: names the key and the value.
    """
    for key in ("env_kwargs", "monitor_kwargs"):
        if entry.get(key) is not None and not isinstance(entry[key], dict):
            raise ConfigError(f"{key}={entry[key]!r} is not allowed: must be a mapping of argument names to "
                              "values, such as dict(max_episode_steps=40000)")


def check_finite(entry: dict[str, Any]) -> None:
    """
    Every number in ``entry`` (also inside lists and mappings: callback and wrapper arguments) and
    RL Zoo's ``lin_<value>`` schedules must be finite: ``nan`` passes no range test but ``inf``
    passes one-sided ones (``learning_rate > 0``), and neither can train.

    :raises ConfigError: names the key (``callback...final_eps``) and the value.
    """

    ranges = {key: allowed for key, _, allowed in RANGES}

    def refuse(where: str, value: Any) -> None:
        allowed = f"{ranges[where]} (finite)" if where in ranges else "a finite number"
        raise ConfigError(f"{where}={value!r} is not allowed: must be {allowed}")

    def visit(value: Any, where: str) -> None:
        if isinstance(value, str) and value.startswith("lin_"):
            number = _float_or_none(value[4:])
            if number is not None and not math.isfinite(number):
                refuse(where, value)
        elif _is_number(value) and not math.isfinite(value):
            refuse(where, value)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{where} {key}" if where else str(key))
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item, where)

    visit(entry, "")
