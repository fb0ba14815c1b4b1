"""Reading settings dataclasses from environment variables (shared by the inference service and gateway).

A settings class is a dataclass whose fields carry ``metadata={"env": "VAR_NAME"}``. ``read_env`` reads
every such variable, lets explicit overrides (flags) win, and hands raw strings to the class's own
parser; the small parsers here give errors that name the variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

OFF_WORDS = ("off", "none", "disabled", "-1")


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable."""


def env_name(cls: type, attr: str) -> str:
    """The environment variable behind field ``attr`` of settings class ``cls``."""
    for f in fields(cls):
        if f.name == attr:
            return f.metadata["env"]
    raise KeyError(attr)


def env_vars(cls: type) -> tuple[str, ...]:
    """Every environment variable the fields of ``cls`` read."""
    return tuple(f.metadata["env"] for f in fields(cls))


def add_setting_flags(parser: argparse.ArgumentParser, cls: type, help_texts: Mapping[str, str],
                      overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """One ``--flag-name`` per field of ``cls`` (dest = field name, default None), its help naming the
    variable it overrides; ``overrides`` changes add_argument options per field (e.g. ``nargs``)."""
    for f in fields(cls):
        env = f.metadata["env"]
        options: dict[str, Any] = {"dest": f.name, "default": None, "metavar": env}
        options.update((overrides or {}).get(f.name, {}))
        parser.add_argument("--" + f.name.replace("_", "-"),
                            help=f"{help_texts.get(f.name, '')} [env {env}]", **options)


def read_env(
    cls: type,
    parse: Callable[[str, str, str], Any],
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any],
    file_values: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Field values for ``cls(**values)``, by the one precedence rule of every polyvec command:
    a flag (``overrides`` not None; strings are parsed) wins over a non-empty environment variable,
    which wins over the config file (``file_values``, see :func:`read_settings_file`), which wins over
    the default. ``parse(attr, env, raw)`` turns a raw string into a value."""
    environ = os.environ if environ is None else environ
    file_values = file_values or {}
    names = {f.name for f in fields(cls)}
    unknown = (set(overrides) | set(file_values)) - names
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        env = f.metadata["env"]
        if overrides.get(f.name) is not None:
            value = overrides[f.name]
            values[f.name] = parse(f.name, env, value.strip()) if isinstance(value, str) else value
        elif environ.get(env, "") != "":
            values[f.name] = parse(f.name, env, environ[env].strip())
        elif file_values.get(f.name, "") != "":
            values[f.name] = parse(f.name, env, file_values[f.name].strip())
    return values


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="YAML file of settings: the option names (http_port: 8000) or their variables "
                             "(HTTP_PORT: 8000). Options win over the environment, which wins over the file")


def parse_int(env: str, raw: str) -> int:
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{env} must be a whole number, not {raw!r}") from None


def parse_float(env: str, raw: str, unit: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{env} must be a number of {unit}, not {raw!r}") from None


def parse_port(env: str, raw: str) -> int | None:
    """A port number, or None for off/none/disabled/-1."""
    if raw.lower() in OFF_WORDS:
        return None
    return parse_int(env, raw)


def parse_bool(env: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{env} must be 0/1 (or true/false), not {raw!r}")


def check_port(env: str, port: int | None) -> None:
    if port is not None and not 0 <= port <= 65535:
        raise SettingsError(f"{env} must be a port number 0-65535, not {port}")


def read_settings_file(path: str, cls: type) -> dict[str, str]:
    """Settings of ``cls`` from a YAML file: a mapping whose keys are field names (``http_port``) or their
    variables (``HTTP_PORT``). Values become the strings a variable would hold (lists are joined with
    commas, mappings as ``name=value,...``), so the class's own parser checks them. Unknown keys are
    refused, naming the closest known one."""
    import difflib

    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: the config must be a mapping of settings, not {type(raw).__name__}")
    by_env = {f.metadata["env"]: f.name for f in fields(cls)}
    names = {f.name for f in fields(cls)}
    values: dict[str, str] = {}
    for key, value in raw.items():
        name = by_env.get(str(key), str(key))
        if name not in names:
            close = difflib.get_close_matches(str(key).lower(), sorted(names), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(f"{path}: unknown setting {key!r}{hint}")
        if value is None:
            continue
        values[name] = _as_setting_string(value)
    return values


def _as_setting_string(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)
