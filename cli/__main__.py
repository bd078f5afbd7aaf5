"""``chinwag``: one command with sub-commands for running and using a node."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from chinwag.node.client import ClientError, NodeUnreachable
from chinwag.node.migrations import SchemaError
from chinwag.node.version import VERSION

from . import (
    action_cmds,
    admin_cmds,
    backup_cmds,
    chat_cmds,
    config_cmds,
    contacts_cmds,
    discover_cmd,
    group_cmds,
    link_cmds,
    node_cmds,
    push_cmds,
    settings,
    signal_cmds,
    tui_cmd,
)
from .common import CliError, client_error_message
from .exitcodes import Exit, for_error_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chinwag", description="A peer-to-peer federated chat node."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--version", action="version", version=f"chinwag {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    node_cmds.register(sub)
    chat_cmds.register(sub)
    action_cmds.register(sub)
    admin_cmds.register(sub)
    discover_cmd.register(sub)
    contacts_cmds.register(sub)
    signal_cmds.register(sub)
    group_cmds.register(sub)
    link_cmds.register(sub)
    push_cmds.register(sub)
    tui_cmd.register(sub)
    backup_cmds.register(sub)
    config_cmds.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if args.command == "run":
            # The config file's settings, under the flags typed (cli/settings.py).
            typed = list(sys.argv[1:] if argv is None else argv)
            args = settings.resolve(parser, typed).args
        return handler(args)
    except CliError as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return exc.exit_code
    except NodeUnreachable as exc:
        print(f"chinwag: {client_error_message(exc)}", file=sys.stderr)
        return Exit.UNREACHABLE
    except ClientError as exc:
        print(f"chinwag: {client_error_message(exc)}", file=sys.stderr)
        return for_error_code(exc.code)
    except SchemaError as exc:
        # Any command that opens the store (run, user, peers, export offline).
        print(f"chinwag: {exc}", file=sys.stderr)
        return Exit.STORAGE
    except KeyboardInterrupt:
        return Exit.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
