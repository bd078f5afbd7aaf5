"""``chinwag config check`` and ``chinwag config show``: the ``run`` config file."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import CliError
from .exitcodes import Exit
from .node_cmds import CONFIG_FIELDS, node_config
from .settings import CONFIG_NAME, Resolved, resolve, show_value

#: Settings whose default follows from others: what they come to.
DERIVED: dict[str, Callable[[Any], Any]] = {
    "link_heartbeat": lambda config: config.link_interval,
    "link_heartbeat_deadline": lambda config: config.link_deadline,
    "log_level": lambda config: "info",  # 'chinwag -v run': debug
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="check or show the settings of 'chinwag run'")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = csub.add_parser(
        "check", help=f"validate the config file (--config PATH, or DATA/{CONFIG_NAME})"
    )
    _where_args(q)
    q.set_defaults(handler=cmd_config_check)
    q = csub.add_parser(
        "show",
        help="print the settings 'run' would use: file, flags and defaults, and where each "
        "came from",
        description="Extra arguments after -- are 'run' flags, shown as they would override "
        "the file: chinwag config show -- --listen 0.0.0.0:7600",
    )
    _where_args(q)
    q.add_argument("run_flags", nargs=argparse.REMAINDER, metavar="-- RUN FLAGS")
    q.set_defaults(handler=cmd_config_show)


def _where_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, metavar="PATH", help="the config file")
    where.add_argument(
        "--data", type=Path, metavar="DIR", help=f"data directory (reads DIR/{CONFIG_NAME})"
    )


def _resolved(args: argparse.Namespace) -> Resolved:
    # Imported here: the top-level parser imports this module.
    from .__main__ import build_parser

    argv = ["run"]
    if args.config is not None:
        argv += ["--config", str(args.config)]
    if args.data is not None:
        argv += ["--data", str(args.data)]
    extra = list(getattr(args, "run_flags", None) or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return resolve(build_parser(), argv + extra)


def _checked(resolved: Resolved) -> Any:
    """The NodeConfig the settings make, or the reason they make none."""
    try:
        return node_config(resolved.args)
    except CliError as exc:
        where = f"{resolved.path}: " if resolved.path is not None else ""
        raise CliError(f"{where}{exc}", exc.exit_code) from exc


def cmd_config_check(args: argparse.Namespace) -> int:
    resolved = _resolved(args)
    _checked(resolved)
    if resolved.path is None:
        data = args.data or "the data directory"
        print(f"no config file ({data}/{CONFIG_NAME}); the defaults apply")
    else:
        count = sum(1 for source in resolved.sources.values() if source == "file")
        print(f"{resolved.path}: ok ({count} setting{'s' * (count != 1)})")
    return Exit.OK


def cmd_config_show(args: argparse.Namespace) -> int:
    resolved = _resolved(args)
    config = _checked(resolved)
    fields = dict(CONFIG_FIELDS)
    print(f"# settings of 'chinwag run'; config file: {resolved.path or 'none'}")
    rows = []
    for option in resolved.options:
        value = getattr(resolved.args, option.dest)
        if option.dest == "data":
            value = str(config.data_dir)
        elif value is None and option.dest in DERIVED:
            value = DERIVED[option.dest](config)
        elif value is None and option.dest in fields:
            value = getattr(config, fields[option.dest])
        rows.append((f"{option.key} = {show_value(value)}", resolved.sources[option.dest]))
    width = max(len(text) for text, _ in rows)
    for text, source in rows:
        print(f"{text:<{width}}  # {source}")
    return Exit.OK


__all__ = ["register"]
