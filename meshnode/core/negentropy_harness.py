"""The negentropy conformance harness: ``python -m meshnode.core.negentropy_harness``.

hoytech/negentropy tests implementations against each other (``test/fuzz.pl``,
``test/protoversion.pl``) by driving one harness process per side over stdin/stdout. This one
speaks the same line protocol as the reference's ``test/js/harness.js``. By default it splits
ranges as the reference does (``--strategy reference``), so the reference's delta tests can
compare our messages with theirs byte for byte; ``--strategy meshnode`` uses the strategy a
running node uses (one opening fingerprint, 4-way splits), to try that against other
implementations. In::

    item,<timestamp>,<id hex>   add an item (before seal)
    seal                        freeze the item set
    initiate                    act as the client: print the opening message
    msg,<hex>                   a message from the other side

Out: ``msg,<hex>`` (the reply), and for the client ``have,<id hex>`` / ``need,<id hex>``
lines before it, or ``done`` instead of it when reconciliation is complete. A process that has
not run ``initiate`` is the server. ``FRAMESIZELIMIT`` in the environment sets the frame size
limit. Errors end the process with a message on stderr and exit status 1, as the reference
harness's uncaught exceptions do.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from meshnode.core.negentropy import (
    REFERENCE,
    Initiator,
    NegentropyError,
    Responder,
    SortedItems,
    Strategy,
)
from meshnode.core.session import STRATEGY

STRATEGIES = {"reference": REFERENCE, "meshnode": STRATEGY}


class HarnessError(Exception):
    """A line the harness protocol does not allow."""


def run(
    lines: Iterable[str], out: TextIO, frame_size_limit: int = 0, strategy: Strategy = REFERENCE
) -> None:
    """Serve one harness session; flushes after every command because the peer waits on it."""
    pending: list[tuple[int, bytes]] | None = []
    items: SortedItems | None = None
    initiator: Initiator | None = None
    responder: Responder | None = None

    def send(message: bytes) -> None:
        if frame_size_limit and len(message) > frame_size_limit:
            raise HarnessError(f"frameSizeLimit exceeded: {len(message)} > {frame_size_limit}")
        out.write(f"msg,{message.hex()}\n")

    for line in lines:
        fields = line.rstrip("\r\n").split(",")
        command = fields[0]
        if command == "item":
            if len(fields) != 3:
                raise HarnessError("item needs a timestamp and an id")
            if pending is None:
                raise HarnessError("already sealed")
            pending.append((int(fields[1]), bytes.fromhex(fields[2].strip())))
        elif command == "seal":
            if pending is None:
                raise HarnessError("already sealed")
            items = SortedItems(pending)
            pending = None
        elif items is None:
            raise HarnessError(f"{command or 'empty line'} before seal")
        elif command == "initiate":
            if initiator is None:
                initiator = Initiator(items, strategy=strategy, frame_size_limit=frame_size_limit)
            send(initiator.initiate())
        elif command == "msg":
            message = bytes.fromhex(fields[1]) if len(fields) > 1 else b""
            if initiator is not None:
                step = initiator.reconcile(message)
                out.writelines(f"have,{item_id.hex()}\n" for item_id in step.have_ids)
                out.writelines(f"need,{item_id.hex()}\n" for item_id in step.need_ids)
                if step.message is None:
                    out.write("done\n")
                else:
                    send(step.message)
            else:
                if responder is None:
                    responder = Responder(
                        items, strategy=strategy, frame_size_limit=frame_size_limit
                    )
                send(responder.reconcile(message))
        else:
            raise HarnessError(f"unknown cmd: {command}")
        out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshnode.core.negentropy_harness",
        description="Negentropy v1 over the reference harness's line protocol.",
    )
    parser.add_argument(
        "--strategy",
        choices=sorted(STRATEGIES),
        default="reference",
        help="how to open and split: the reference's (default) or the one meshnode runs",
    )
    args = parser.parse_args(argv)
    limit = os.environ.get("FRAMESIZELIMIT", "")
    try:
        run(sys.stdin, sys.stdout, int(limit) if limit else 0, STRATEGIES[args.strategy])
    except (HarnessError, NegentropyError, ValueError) as exc:
        sys.stderr.write(f"negentropy harness: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
