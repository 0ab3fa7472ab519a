"""Generate ``discovery.json``: the advertisement of ``protocol/discovery.md`` §1.

Run from the repository root: ``python protocol/vectors/generate_discovery.py``.
``tests/test_advert.py`` checks that the committed file is what this script
produces. The label's 10 bytes are random at every start; here they are fixed,
so that the label's encoding can be checked too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from meshnode.core.advert import advert_for
from meshnode.core.netkey import PUBLIC_NETWORK_KEY, encode_network_key

OUT = Path(__file__).with_name("discovery.json")
KEYS = {"public network": PUBLIC_NETWORK_KEY, "a private network": bytes(range(32))}
LABEL_BYTES = [bytes(10), bytes(range(246, 256))]


def vectors() -> dict[str, Any]:
    cases = []
    for name, key in KEYS.items():
        for random_bytes in LABEL_BYTES:
            advert = advert_for(key, random_bytes, 7744)
            cases.append(
                {
                    "network": name,
                    "network_key": key.hex(),
                    "network_invite": encode_network_key(key),
                    "label_bytes": random_bytes.hex(),
                    "instance": advert.instance,
                    "server": advert.server,
                    "txt": advert.txt,
                }
            )
    return {
        "notes": (
            "Each case: a network key (hex and invite) and the 10 random bytes of a label (hex);"
            " the DNS-SD instance name, SRV target and TXT pairs the node announces with them"
            " (discovery.md §1). Only n= depends on the network key."
        ),
        "cases": cases,
    }


def render() -> str:
    return json.dumps(vectors(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
