"""`scaledyolo weights`: where each member's released weights are published; which one a local file is."""

from __future__ import annotations

import argparse

from scaledyolo.commands.common import show
from scaledyolo.errors import UserError
from scaledyolo.interop.released import format_table, identify, released_files
from scaledyolo.models.spec import MEMBERS


def run(args: argparse.Namespace) -> int:
    if args.verify:
        found = identify(args.verify)
        show(found, found["verdict"], args.json)
        return 0 if found["match"] is not None else 1
    files = released_files(args.member)
    if not files:
        raise UserError(f"no released files known for {args.member!r} (members: {', '.join(MEMBERS)})")
    show([f.to_dict() for f in files], format_table(files), args.json)
    return 0
