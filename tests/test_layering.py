"""The layering, enforced: pure layers without clocks or I/O, and a CLI that starts without trio.

The rules live in ``tests/layering.py`` (one line per layer, read from the
source with ``ast``); these tests apply them to the tree, and show on a copy of
it that each kind of violation is caught.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.layering import LAYERS, layer_of, violations

ROOT = Path(__file__).resolve().parent.parent


def test_every_import_in_the_tree_keeps_to_its_layer() -> None:
    assert violations(ROOT) == []


def test_the_pure_layers_are_the_ones_the_architecture_names() -> None:
    pure = {layer.name for layer in LAYERS if "time" in layer.forbidden}
    assert pure == {"core", "store interface", "engine"}
    assert layer_of("meshnode.sim.network").name == "simulator"
    assert layer_of("meshnode.core.negentropy_harness").name == "harness (an edge)"
    assert layer_of("meshnode.store.sqlite").name == "store edge"


def copy_of_the_package(into: Path) -> None:
    shutil.copytree(ROOT / "meshnode", into / "meshnode", ignore=shutil.ignore_patterns("*.pyc"))


@pytest.mark.parametrize(
    ("path", "planted", "caught"),
    [
        (
            "meshnode/core/record.py",
            "\n\ndef _planted() -> None:\n    import time\n",
            "meshnode.core.record (core) imports time",
        ),
        (
            "meshnode/engine/mesh.py",
            "\nimport random\n",
            "meshnode.engine.mesh (engine) imports random",
        ),
        (
            "meshnode/store/base.py",
            "\nfrom meshnode.runtime import peers\n",
            "meshnode.store.base (store interface) imports meshnode.runtime",
        ),
        (
            "meshnode/store/standing.py",
            "\nfrom . import sqlite\n",
            "meshnode.store.standing (store interface) imports meshnode.store.sqlite",
        ),
        (
            "meshnode/engine/node.py",
            "\n\ndef _planted() -> None:\n    from meshnode.store.sqlite import SQLiteStore\n",
            "meshnode.engine.node (engine) imports meshnode.store.sqlite",
        ),
        ("meshnode/engine/bans.py", "\nimport os\n", "meshnode.engine.bans (engine) imports os"),
        (
            "meshnode/engine/peering.py",
            "\nfrom meshnode.sim import network\n",
            "meshnode.engine.peering (engine) imports meshnode.sim",
        ),
        (
            "meshnode/sim/network.py",
            "\n\ndef _planted() -> None:\n    from meshnode.runtime import peers\n",
            "meshnode.sim.network (simulator) imports meshnode.runtime",
        ),
        (
            "meshnode/sim/scenario.py",
            "\nimport threading\n",
            "meshnode.sim.scenario (simulator) imports threading",
        ),
        (
            "meshnode/system/config.py",
            "\nimport trio\n",
            "meshnode.system.config (system) imports trio",
        ),
        (
            "meshnode/client/cli.py",
            "\nimport trio\n",
            "meshnode.client.cli (client and CLI) imports trio",
        ),
        (
            "meshnode/client/cli.py",
            "\n\ndef _planted() -> None:\n    import meshnode.runtime.peers\n",
            "meshnode.client.cli (client and CLI) imports meshnode.runtime.peers",
        ),
    ],
)
def test_a_planted_violation_is_caught(
    tmp_path: Path, path: str, planted: str, caught: str
) -> None:
    shutil.copytree(
        ROOT / "meshnode", tmp_path / "meshnode", ignore=shutil.ignore_patterns("*.pyc")
    )
    with (tmp_path / path).open("a", encoding="utf-8") as source:
        source.write(planted)
    assert [v.split(": ", 1)[1] for v in violations(tmp_path)] == [caught]


def test_imports_for_the_type_checker_only_and_the_cli_starting_the_daemon_are_allowed(
    tmp_path: Path,
) -> None:
    shutil.copytree(
        ROOT / "meshnode", tmp_path / "meshnode", ignore=shutil.ignore_patterns("*.pyc")
    )
    with (tmp_path / "meshnode/core/session.py").open("a", encoding="utf-8") as source:
        source.write("\nif TYPE_CHECKING:\n    import trio\n")
    assert violations(tmp_path) == []
    assert "from meshnode.runtime.daemon import" in (ROOT / "meshnode/client/cli.py").read_text()


def test_the_cli_starts_without_trio_zeroconf_or_a_crypto_backend() -> None:
    """What the import statements say, confirmed by what a real import loads."""
    code = "import sys, meshnode.client.cli; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not {"trio", "zeroconf", "cryptography", "nacl", "sqlite3"} & set(out.stdout.split())
