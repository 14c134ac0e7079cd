"""Read one entry of an RL Zoo hyperparameter YAML: the single place where configuration is chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: ``hyperparams/`` beside the package (an editable install or a clone).
HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "hyperparams"
#: The profile whose entry is named by the env id alone.
DEFAULT_PROFILE = "deepmind"


class ConfigError(ValueError):
    """Bad user input: the message is one line that names the bad value and what is allowed."""


def default_config(algo: str) -> Path:
    """``hyperparams/<algo>.yml`` of this checkout."""
    return HYPERPARAMS_DIR / f"{algo}.yml"


def entry_name(env_id: str, profile: str | None) -> str:
    """YAML key of a profile: the env id for ``deepmind`` (RL Zoo reads that one), else ``<env id>-<profile>``."""
    return env_id if profile in (None, DEFAULT_PROFILE) else f"{env_id}-{profile}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The whole YAML file as a dict of entries."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must map entry names to hyperparameters, got {type(data).__name__}")
    return data


def profiles_in(data: dict[str, Any], env_id: str) -> list[str]:
    """The profiles a config file defines for ``env_id``."""
    names = [DEFAULT_PROFILE] if env_id in data else []
    return names + [key[len(env_id) + 1 :] for key in data if key.startswith(f"{env_id}-")]


def load_entry(path: str | Path, env_id: str, profile: str | None = None) -> dict[str, Any]:
    """
    The hyperparameters of ``env_id`` and ``profile`` in the YAML at ``path`` (a fresh dict).

    :raises ConfigError: unreadable file, no such entry.
    """
    data = read_yaml(path)
    key = entry_name(env_id, profile)
    if key not in data:
        known = ", ".join(profiles_in(data, env_id)) or "none"
        raise ConfigError(f"no entry {key!r} in {str(path)!r} (profile {profile or DEFAULT_PROFILE!r}); profiles there: {known}")
    entry = data[key]
    if not isinstance(entry, dict):
        raise ConfigError(f"entry {key!r} in {str(path)!r} must be a mapping of hyperparameters")
    return dict(entry)
