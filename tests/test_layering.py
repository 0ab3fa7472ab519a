"""The layering, enforced: a pure core, and a CLI that starts without trio."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import meshnode.core

CORE_MODULES = sorted(
    f"meshnode.core.{m.name}"
    for m in pkgutil.iter_modules(meshnode.core.__path__)
    if not m.name.endswith("_harness")  # a harness is an edge: it reads stdin
)
IO_MODULES = {"trio", "socket", "sqlite3", "time", "zeroconf", "asyncio", "selectors"}


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_modules_do_no_io_and_read_no_clock(module: str) -> None:
    baseline = loaded_after_import("sys")
    assert not (loaded_after_import(module) - baseline) & IO_MODULES


@pytest.mark.parametrize(
    "module",
    [
        "meshnode.node",
        "meshnode.bans",
        "meshnode.admission",
        "meshnode.store",
        "meshnode.store.base",
        "meshnode.store.standing",
    ],
)
def test_the_node_and_store_interface_need_no_io(module: str) -> None:
    baseline = loaded_after_import("sys")
    assert not (loaded_after_import(module) - baseline) & (IO_MODULES - {"time"})


def test_the_cli_imports_neither_trio_nor_zeroconf_nor_a_crypto_backend() -> None:
    loaded = loaded_after_import("meshnode.cli")
    assert not {"trio", "zeroconf", "cryptography", "sqlite3"} & loaded
