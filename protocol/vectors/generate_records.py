"""Write ``records.json``: ``python protocol/vectors/generate_records.py`` from the repository root.

The vectors are built by ``meshnode.conformance.record_vectors``, which the conformance
suite also uses; ``tests/test_record.py`` checks the committed file is exactly its output.
"""

import sys
from pathlib import Path

from meshnode.conformance.record_vectors import render

OUT = Path(__file__).with_name("records.json")

if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stderr.write(f"wrote {OUT}\n")
