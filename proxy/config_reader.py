"""A TOML table reader that collects errors instead of raising: each value converted to the
type a settings dataclass declares, `${ENV}` references filled in, unknown keys reported with a
did-you-mean. config.py builds each section of Settings with it.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from enum import Enum
from typing import Any, Literal, get_args, get_origin

from proxy.settings import Secret


class ConfigError(Exception):
    """The config cannot be used: `errors` has every problem found, one "key.path: message" each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


ABSENT = _Marker("absent")  # the key is not in the file
BAD = _Marker("bad")  # the value is unusable and its error is already recorded

# Takes a converted value, returns it (perhaps normalised) or raises ValueError("what is wrong").
Check = Callable[[Any], Any]


# --- reading tables ---------------------------------------------------------------------------


class Reader:
    """One TOML table and its key path. Records errors instead of raising; knows the keys read."""

    def __init__(self, table: Mapping[str, Any], path: str, errors: list[str]) -> None:
        self.table = table
        self.path = path
        self.errors = errors
        self.known: set[str] = set()

    def error(self, key: str | None, message: str, index: int | None = None) -> None:
        where = self.path if key is None else join_key(self.path, key)
        where += "" if index is None else f"[{index}]"
        self.errors.append(f"{where}: {message}")

    def read(self, key: str, hint: Any) -> Any:
        """The value converted to `hint`, or ABSENT, or BAD (its error recorded)."""
        self.known.add(key)
        if key not in self.table:
            return ABSENT
        return _convert(self.table[key], hint, join_key(self.path, key), self.errors)

    def required(self, key: str, hint: Any) -> Any:
        value = self.read(key, hint)
        if value is ABSENT:
            self.error(key, "missing; it is required")
            return BAD
        return value

    def put(self, fields: dict[str, Any], key: str, hint: Any, *checks: Check) -> None:
        """Read `key` into `fields` when present and valid; absent keys keep the default."""
        value = self.read(key, hint)
        if value is ABSENT or value is BAD:
            return
        try:
            for check in checks:
                value = check(value)
        except ValueError as error:
            self.error(key, str(error))
            return
        fields[key] = value

    def section(self, key: str) -> Reader:
        value = self.read(key, dict[str, Any])
        return Reader(
            value if isinstance(value, dict) else {}, join_key(self.path, key), self.errors
        )

    def tables(self) -> Iterator[tuple[str, Reader]]:
        """Each sub-table (e.g. every [sources.<name>]) with its name; other values are errors."""
        for name, value in self.table.items():
            self.known.add(name)
            if isinstance(value, dict):
                yield name, Reader(value, join_key(self.path, name), self.errors)
            elif value is not BAD:
                self.error(name, f"expected a table, got {shown(value)}")

    def done(self) -> None:
        """Report keys nobody read: typos should not be silently ignored."""
        for key in self.table:
            if key not in self.known:
                self.error(key, f"unknown key{did_you_mean(key, self.known)}")


# Numbers beyond this break more than they configure (SQLite and JSON hold 64 bits; floats
# stop counting exactly): no setting needs one.
MAX_INTEGER = 2**53
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is allowed
_BARE_REFERENCE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")


def _convert(value: Any, hint: Any, path: str, errors: list[str]) -> Any:
    """`value` as the type `hint` names (str, int, float, bool, Secret, enums, Literal,
    `X | None`, tuple[X, ...], dict[str, X]); on a mismatch, records an error and returns BAD.
    """
    if value is BAD or hint is Any:
        return value
    origin, args = get_origin(hint), get_args(hint)
    if origin in (types.UnionType, typing.Union):
        (inner,) = (arg for arg in args if arg is not type(None))  # TOML has no null
        return _convert(value, inner, path, errors)
    if isinstance(value, UnsetVariable) and hint is not Secret:
        # Only a secret goes unused by the commands that tolerate it; a URL or a path is used.
        errors.append(f"{path}: environment variable {value.variable} is not set")
        return BAD
    if origin is tuple and isinstance(value, list):
        items = [_convert(item, args[0], f"{path}[{i}]", errors) for i, item in enumerate(value)]
        return BAD if BAD in items else tuple(items)
    if origin in (dict, Mapping) and isinstance(value, dict):
        entries = {
            key: _convert(item, args[1], join_key(path, key), errors) for key, item in value.items()
        }
        return BAD if BAD in entries.values() else entries
    if origin is Literal and value in args and isinstance(value, str):
        return value
    if isinstance(hint, type) and issubclass(hint, Enum) and isinstance(value, str):
        choices = [member.value for member in hint]
        if value in choices:
            return hint(value)
        hint_text = did_you_mean(value, choices)
        errors.append(f"{path}: expected {_expected(hint)}, got {shown(value)}{hint_text}")
        return BAD
    if hint in (str, Secret) and isinstance(value, str) and _CONTROL.search(value):
        # A header value, a token or a URL with a line break would fail (or split) a request.
        errors.append(f"{path}: contains a control character (a line break, a NUL)")
        return BAD
    if hint is Secret and isinstance(value, str):
        if _BARE_REFERENCE.fullmatch(value):
            # A shell habit: without braces it is not a reference, and a vendor such as GA4
            # answers 2xx even to a wrong secret, so nothing would ever show the slip. Only
            # secrets: "$pageview" is a fine event name (PostHog's), a secret is never "$NAME".
            errors.append(
                f'{path}: "{value}" is taken literally; write "${{{value[1:]}}}" to read the'
                " environment variable"
            )
            return BAD
        if value != value.strip():
            errors.append(f"{path}: has spaces around it (a copy-paste slip: it would never match)")
            return BAD
        if value:
            return Secret(value)
        if isinstance(value, EmptyVariable):
            errors.append(f"{path}: environment variable {value.variable} is set but empty")
        else:
            errors.append(f"{path}: is empty")
        return BAD
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if abs(value) > MAX_INTEGER or not math.isfinite(value):
            errors.append(f"{path}: expected a finite number, got {shown(value)}")
            return BAD
        return float(value)
    if hint in (str, bool) and isinstance(value, hint):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_INTEGER:
            errors.append(f"{path}: expected an integer of at most 2^53, got {shown(value)}")
            return BAD
        return value
    errors.append(f"{path}: expected {_expected(hint)}, got {shown(value)}")
    return BAD


def _expected(hint: Any) -> str:
    """How an error names the type `hint`; raises TypeError for a type config cannot fill."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"a config field cannot be {hint!r}")
        return _expected(inner[0])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list of {_PLURALS.get(_expected(args[0]), 'values')}"
    if origin in (dict, Mapping) and args == (str, Any):
        return "a table"
    if origin in (dict, Mapping) and args and args[0] is str:
        return f"a table of {_PLURALS.get(_expected(args[1]), 'values')}"
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(arg) for arg in args)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(json.dumps(member.value) for member in hint)
    if hint in _NAMES:
        return _NAMES[hint]
    if hint is Any:
        return "any value"
    raise TypeError(f"a config field cannot be {hint!r}")


_NAMES: dict[Any, str] = {
    str: "a string",
    Secret: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}
_PLURALS = {"a string": "strings", "an integer": "integers", "a number": "numbers"}


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # TOML dates and times


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def join_key(path: str, key: str) -> str:
    """A dotted key path, quoting keys that TOML would quote."""
    part = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{path}.{part}" if path else part


# --- ${ENV} references ------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(
    value: Any, path: str, env: Mapping[str, str], errors: list[str], need_secrets: bool = True
) -> Any:
    """Every string with `${NAME}` filled from `env` (`$${` writes a literal `${`).

    A value with a missing variable becomes BAD, so it is reported once, here, with its key;
    unless `need_secrets` is false and the value is all `${NAME}`: then it is an UnsetVariable,
    which a secret takes as a placeholder and any other setting reports.
    """
    if isinstance(value, dict):
        return {
            key: interpolate(item, join_key(path, key), env, errors, need_secrets)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            interpolate(item, f"{path}[{i}]", env, errors, need_secrets)
            for i, item in enumerate(value)
        ]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if (
        not need_secrets
        and whole is not None
        and not whole[1]
        and _ENV_NAME.fullmatch(whole[2])
        and whole[2] not in env
    ):
        return UnsetVariable(whole[2])
    problems: list[str] = []

    def fill(match: re.Match[str]) -> str:
        escaped, name = match[1], match[2]
        if escaped:
            return "${" + name + "}"
        if not _ENV_NAME.fullmatch(name):
            problems.append(f'"${{{name}}}" is not an environment variable reference')
        elif name not in env:
            problems.append(f"environment variable {name} is not set")
        else:
            return env[name]
        return ""

    filled = _REFERENCE.sub(fill, value)
    errors.extend(f"{path}: {problem}" for problem in problems)
    if problems:
        return BAD
    if not filled and whole is not None and not whole[1]:
        return EmptyVariable(whole[2])  # "" all the same; a secret's check names the variable
    return filled


class EmptyVariable(str):
    """The "" a `${NAME}` set to nothing gave (`export X=`, a template that filled in nothing):
    an optional setting takes it as empty, a secret's error names the variable."""

    variable: str

    def __new__(cls, variable: str) -> EmptyVariable:
        made = super().__new__(cls, "")
        made.variable = variable
        return made


class UnsetVariable(str):
    """A `${NAME}` whose variable is unset, read by a command that never uses secrets (dead
    letters, replay): such a command runs where the secrets are not (systemd keeps them in a
    root-only file). As a secret it is a placeholder that passes every secret's check, a
    Standard Webhooks `whsec_` key included, different per variable (sources' keys must differ)."""

    variable: str

    def __new__(cls, variable: str) -> UnsetVariable:
        digest = hashlib.sha256(f"unset {variable}".encode()).digest()
        made = super().__new__(cls, "whsec_" + base64.b64encode(digest).decode())
        made.variable = variable
        return made
