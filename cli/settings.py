"""The config file of ``chinwag run``: every flag has a key, flags win.

The file is TOML (read with the standard library's ``tomllib``), at
``--config PATH`` or else ``DATA/chinwag.toml`` when it exists. Its keys are
derived from the ``run`` command's own argparse definition, so a flag added
to ``run`` gets a key with no further work: the key is the long flag without
its dashes (``--max-unauthenticated`` → ``max-unauthenticated``,
``--no-mdns`` → ``no-mdns = true``). A repeatable flag takes a list
(``peer = ["http://a:7600#ID"]``). Values are checked against the flag's type
and choices; an unknown key is an error naming it and the closest known key.

Precedence, per setting: a flag given on the command line, else the file,
else the flag's default. A repeatable flag given on the command line replaces
the file's list (it does not add to it).
"""

from __future__ import annotations

import argparse
import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chinwag.node.config import default_data_dir

from .common import CliError
from .exitcodes import Exit

#: The file looked for in the data directory when ``--config`` is not given.
CONFIG_NAME = "chinwag.toml"
#: Flags that say where the config is, never keys in it.
NOT_KEYS = frozenset({"config", "help"})

FLAG, FILE, DEFAULT = "flag", "file", "default"


class ConfigError(CliError):
    """The config file is missing, unreadable, not TOML, or has a bad key."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Exit.USAGE)


@dataclass(frozen=True)
class Option:
    """One ``run`` flag as a config key."""

    key: str
    action: argparse.Action

    @property
    def dest(self) -> str:
        return self.action.dest

    @property
    def flag(self) -> str:
        return f"--{self.key}"


@dataclass(frozen=True)
class Resolved:
    """The settings ``run`` uses, and where each came from."""

    args: argparse.Namespace
    sources: dict[str, str]  # dest -> FLAG | FILE | DEFAULT
    path: Path | None  # the config file read, if any
    options: tuple[Option, ...]


def run_options(run_parser: argparse.ArgumentParser) -> tuple[Option, ...]:
    """Every flag of ``run`` that may be set in the file, in ``--help`` order."""
    out = []
    # argparse keeps its actions in a private list; it has been stable for a decade.
    for action in run_parser._actions:  # noqa: SLF001
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.dest in NOT_KEYS or action.dest == argparse.SUPPRESS:
            continue
        out.append(Option(longs[0][2:], action))
    return tuple(out)


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The sub-command parser ``name`` of the top-level parser."""
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            found = action.choices.get(name)
            if isinstance(found, argparse.ArgumentParser):
                return found
    raise KeyError(name)


def explicit_dests(
    parser: argparse.ArgumentParser, run_parser: argparse.ArgumentParser, argv: list[str]
) -> set[str]:
    """The ``run`` settings given on the command line (not defaulted).

    Parses ``argv`` again with every ``run`` default suppressed, so what is
    left in the namespace is exactly what was typed, however it was spelled
    (``--listen=x``, abbreviations, repeats).
    """
    actions = run_parser._actions  # noqa: SLF001
    saved = [action.default for action in actions]
    try:
        for action in actions:
            action.default = argparse.SUPPRESS
        typed = parser.parse_args(argv)
    finally:
        for action, default in zip(actions, saved, strict=True):
            action.default = default
    return {action.dest for action in actions if hasattr(typed, action.dest)}


def config_path(args: argparse.Namespace) -> tuple[Path | None, bool]:
    """The config file to read and whether it was named (``--config``)."""
    named = getattr(args, "config", None)
    if named is not None:
        return Path(named).expanduser(), True
    data = Path(args.data).expanduser() if getattr(args, "data", None) else default_data_dir()
    return data / CONFIG_NAME, False


def read_file(path: Path, named: bool) -> dict[str, Any] | None:
    """The file's table, None if it is absent and was not named."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        if named:
            raise ConfigError(f"{path}: no such config file") from None
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def check_values(
    table: dict[str, Any], options: tuple[Option, ...], path: Path, named: bool
) -> dict[str, Any]:
    """The file's settings by dest, each checked against its flag."""
    by_key = {option.key: option for option in options}
    out: dict[str, Any] = {}
    for key, value in table.items():
        option = by_key.get(key)
        if option is None:
            raise ConfigError(f"{path}: unknown key {key!r}{_suggestion(key, by_key)}")
        if option.dest == "data" and not named:
            raise ConfigError(
                f"{path}: key 'data' is only for a file given with --config "
                "(this one is already in the data directory)"
            )
        out[option.dest] = _convert(option, value, path)
    return out


def _suggestion(key: str, by_key: dict[str, Option]) -> str:
    spelled = key.replace("_", "-").lstrip("-")
    if spelled in by_key:
        return f"; did you mean {spelled!r}?"
    close = difflib.get_close_matches(spelled, list(by_key), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else " (see 'chinwag run --help')"


def _kind(value: Any) -> str:
    return {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _convert(option: Option, value: Any, path: Path) -> Any:
    action = option.action
    where = f"{path}: {option.key}"
    if action.nargs == 0:  # store_true / store_false / store_const
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is true or false, not {_kind(value)}")
        if isinstance(action, argparse.BooleanOptionalAction):  # --x / --no-x
            return value
        # The file says whether the flag is on; the namespace holds what the flag would store.
        return action.const if value else action.default
    if isinstance(action, argparse._AppendAction):  # noqa: SLF001
        if not isinstance(value, list):
            raise ConfigError(f"{where} is a list (the flag {option.flag} repeats)")
        return [_one(option, item, f"{where}[{n}]") for n, item in enumerate(value)]
    return _one(option, value, where)


def _one(option: Option, value: Any, where: str) -> Any:
    action = option.action
    wanted = action.type
    if wanted is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} is an integer, not {_kind(value)}")
        converted: Any = value
    elif wanted is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} is a number, not {_kind(value)}")
        converted = float(value)
    else:
        if not isinstance(value, str):
            raise ConfigError(f"{where} is a string, not {_kind(value)}")
        converted = value
        if callable(wanted):
            try:
                converted = wanted(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                raise ConfigError(f"{where}: {value!r} is not valid: {exc}") from exc
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        raise ConfigError(f"{where} is one of {choices}, not {value!r}")
    return converted


def resolve(parser: argparse.ArgumentParser, argv: list[str]) -> Resolved:
    """Parse a ``run`` command line and merge it with its config file."""
    run_parser = subparser(parser, "run")
    args = parser.parse_args(argv)
    typed = explicit_dests(parser, run_parser, argv)
    options = run_options(run_parser)
    path, named = config_path(args)
    table = read_file(path, named) if path is not None else None
    from_file = check_values(table, options, path, named) if table is not None and path else {}
    sources: dict[str, str] = {}
    for option in options:
        dest = option.dest
        if dest in typed:
            sources[dest] = FLAG
        elif dest in from_file:
            setattr(args, dest, from_file[dest])
            sources[dest] = FILE
        else:
            sources[dest] = DEFAULT
    return Resolved(args, sources, path if table is not None else None, options)


def show_value(value: Any) -> str:
    """A setting as it would be written in the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "(unset)"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


__all__ = [
    "CONFIG_NAME",
    "ConfigError",
    "Option",
    "Resolved",
    "explicit_dests",
    "resolve",
    "run_options",
    "show_value",
    "subparser",
]
