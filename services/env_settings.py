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
) -> dict[str, Any]:
    """Field values for ``cls(**values)``: overrides that are not None win (strings are parsed), then
    non-empty environment variables; ``parse(attr, env, raw)`` turns a raw string into a value."""
    environ = os.environ if environ is None else environ
    names = {f.name for f in fields(cls)}
    unknown = set(overrides) - names
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
    return values


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
