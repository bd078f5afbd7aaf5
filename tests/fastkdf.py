"""Run the chinwag CLI (or a script that runs it) with cheap Argon2id: for tests
and benchmarks that create many users. Test-only: not part of the package.

    python tests/fastkdf.py -m chinwag.cli run --data DIR ...
    python tests/fastkdf.py bench/tracenode.py -m chinwag.cli run ...

The installed node reads no setting that weakens its password hashing; this
entry sets the process's default cost through
:func:`chinwag.node.passwords.set_default_cost` before the CLI starts.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

#: This file, for launchers: ``[sys.executable, str(FASTKDF), "-m", "chinwag.cli", ...]``.
FASTKDF = Path(__file__).resolve()


def main() -> None:
    try:
        from chinwag.node.passwords import FAST_TEST_COST, set_default_cost
    except ImportError:
        # A node from before this seam (a benchmark's A/B against an older
        # checkout) read CHINWAG_TEST_FAST_KDF instead; the launcher sets it.
        pass
    else:
        set_default_cost(FAST_TEST_COST)
    # Run as a script, this file's folder (tests/) heads sys.path; take it off
    # so its packages (tests/node, tests/cli, ...) shadow nothing.
    if sys.path and Path(sys.path[0] or ".").resolve() == FASTKDF.parent:
        del sys.path[0]
    args = sys.argv[1:]
    if args[:1] == ["-m"] and len(args) >= 2:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif args and args[0].endswith(".py"):
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")
    else:
        sys.exit("usage: fastkdf.py -m MODULE ARGS... | fastkdf.py SCRIPT.py ARGS...")


if __name__ == "__main__":
    main()
