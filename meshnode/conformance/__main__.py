"""``python -m meshnode.conformance HOST:PORT [--network-key KEY]``: test any implementation.

Prints one line per case and, last, ``N passed, M failed`` (and ``, K skipped``); exits 0
only when no case failed. ``protocol/README.md`` says what the cases cover.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from meshnode.conformance.link import Failure, Target
from meshnode.conformance.suite import CASES
from meshnode.core.addresses import AddressError, parse_address
from meshnode.core.netkey import PUBLIC_NETWORK_KEY, NetworkKeyError, decode_network_key


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshnode.conformance",
        description="Drive a node under test through the meshnode peer protocol's cases.",
    )
    parser.add_argument("address", metavar="HOST:PORT", help="where the node accepts peers")
    parser.add_argument("--network-key", metavar="KEY", help="its network key (mesh1...)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    parser.add_argument(
        "--slow", action="store_true", help="also run the slow cases (10 s of silence)"
    )
    parser.add_argument("-k", dest="only", metavar="TEXT", help="only cases whose name has TEXT")
    args = parser.parse_args(argv)
    try:
        host, port = parse_address(args.address)
        key = (
            PUBLIC_NETWORK_KEY if args.network_key is None else decode_network_key(args.network_key)
        )
    except (AddressError, NetworkKeyError) as exc:
        parser.error(str(exc))
    target = Target(host or "localhost", port, key, args.timeout)
    passed = failed = skipped = 0
    for case in CASES:
        if args.only and args.only not in case.name:
            continue
        if case.slow and not args.slow:
            print(f"skip  {case.name}: takes 10 s (--slow runs it)")
            skipped += 1
            continue
        started = time.monotonic()
        try:
            why_skipped = case.run(target)
        except (Failure, OSError) as exc:
            print(f"FAIL  {case.name}: {exc}")
            failed += 1
            continue
        except Exception as exc:  # a case must not end the run: say what broke and go on
            print(f"FAIL  {case.name}: {type(exc).__name__}: {exc}")
            failed += 1
            continue
        if why_skipped:
            print(f"skip  {case.name}: {why_skipped}")
            skipped += 1
        else:
            print(f"ok    {case.name} ({(time.monotonic() - started) * 1000:.0f} ms)")
            passed += 1
        sys.stdout.flush()
    summary = f"{passed} passed, {failed} failed"
    print(summary + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
