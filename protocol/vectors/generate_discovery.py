"""Generate ``discovery.json``: the labels and tags of ``protocol/discovery.md`` §1.

Run from the repository root: ``python protocol/vectors/generate_discovery.py``.
``tests/test_advert.py`` checks that the committed file is what this script
produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from meshnode.core.advert import advert_for
from meshnode.core.identity import Identity
from meshnode.core.netkey import PUBLIC_NETWORK_KEY, encode_network_key

OUT = Path(__file__).with_name("discovery.json")
KEYS = {"public network": PUBLIC_NETWORK_KEY, "a private network": bytes(range(32))}
SEEDS = [bytes([n]) * 32 for n in (1, 2)]


def vectors() -> dict[str, Any]:
    cases = []
    for name, key in KEYS.items():
        for seed in SEEDS:
            public_key = Identity(seed).public_key
            advert = advert_for(key, public_key, 7744)
            cases.append(
                {
                    "network": name,
                    "network_key": key.hex(),
                    "network_invite": encode_network_key(key),
                    "public_key": public_key.hex(),
                    "instance": advert.instance,
                    "server": advert.server,
                    "txt": advert.txt,
                }
            )
    return {
        "notes": (
            "Each case: a network key and a node's Ed25519 public key (hex), and the DNS-SD"
            " instance name, SRV target and TXT pairs the node announces (discovery.md §1)."
        ),
        "cases": cases,
    }


def render() -> str:
    return json.dumps(vectors(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
