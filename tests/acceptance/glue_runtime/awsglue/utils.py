"""``getResolvedOptions`` as Glue defines it: ``--name value`` pairs of the job run's arguments."""

from __future__ import annotations


def getResolvedOptions(args: list[str], options: list[str]) -> dict[str, str]:  # noqa: N802 (Glue's name)
    resolved = {}
    for name in options:
        flag = f"--{name}"
        if flag not in args:
            raise RuntimeError(f"argument {flag} is required")
        resolved[name] = args[args.index(flag) + 1]
    return resolved
