from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from meshnode.store import MemoryStore, Store, StoreLimits
from meshnode.store.sqlite import SQLiteStore
from meshnode.system.config import ENV_VARIABLES
from tests.helpers import STORE_OWNER, Daemon, MakeStore

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("default")


@pytest.fixture(autouse=True, scope="session")
def no_real_configuration(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing under test reads the developer's ~/.config/meshnode or /etc/meshnode.

    Set in the environment for the whole session, so daemons run as subprocesses
    inherit it; a test that wants a file or a variable sets its own.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
        for name in ENV_VARIABLES:
            patch.delenv(name, raising=False)
        yield


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Make real daemons in this test's temp dir; every one is killed afterwards."""
    made: list[Daemon] = []

    def make(name: str = "node", package: Path | None = None) -> Daemon:
        daemon = Daemon(tmp_path / name, package=package)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.cleanup()


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    return daemon_factory().start()


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Stores owned by ``STORE_OWNER``, of each kind in turn; closed after the test."""
    opened: list[Store] = []

    def make(limits: StoreLimits | None = None) -> Store:
        if request.param == "memory":
            store: Store = MemoryStore(STORE_OWNER.public_key, limits)
        else:
            path = tmp_path / f"store{len(opened)}.db"
            store = SQLiteStore(path, STORE_OWNER.public_key, limits)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
