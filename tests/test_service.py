"""``meshnode service install|uninstall``: what it writes, with which owners and modes, that a
second run changes nothing, and that it refuses what cannot work.

The system installation is tested inside an image (``--root``), which needs no
systemd and touches nothing of this machine; the user one with ``$XDG_CONFIG_HOME``
in the test's directory. A stand-in ``Host`` says whether a manager runs and
records the commands that would have gone to ``systemctl``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from meshnode.client import cli
from meshnode.system import service

SYSUSERS = shutil.which("systemd-sysusers")
needs_sysusers = pytest.mark.skipif(
    SYSUSERS is None, reason="systemd-sysusers is not installed to create the user in an image"
)
IN_IMAGE = "/opt/meshnode/bin/meshnode"


class FakeHost:
    """A machine with or without a running manager, whose commands are only recorded."""

    def __init__(self, *, booted: bool = False, user_manager: bool = False) -> None:
        self.ran: list[list[str]] = []
        self.host = service.Host(
            euid=os.geteuid(),
            booted=booted,
            user_manager=user_manager,
            which=lambda name: None if name == "systemd-sysusers" else shutil.which(name),
            run=lambda argv: self.ran.append(list(argv)),
        )


def image(tmp_path: Path) -> Path:
    """An image holding a meshnode that every user may run."""
    root = tmp_path / "image"
    program = root / IN_IMAGE.lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/opt/meshnode/bin/python3\n")
    program.chmod(0o755)
    (program.parent / "python3").write_text("")
    (program.parent / "python3").chmod(0o755)
    root.chmod(0o755)
    return root


def main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["service", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(root.rglob("*"))
    }


# -- the system service, into an image ---------------------------------------------------


@needs_sysusers
def test_install_writes_the_unit_user_group_and_etc_meshnode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = image(tmp_path)
    code, out, err = main(capsys, "install", "--root", str(root), "--executable", IN_IMAGE)
    assert code == 0, err
    assert err == ""  # no warning: the program is where the service can reach it

    unit = root / "etc/systemd/system/meshnode.service"
    assert mode(unit) == 0o644
    text = unit.read_text()
    assert (
        f"\nExecStart={IN_IMAGE} run --config /etc/meshnode/config.toml"
        " --data-dir /var/lib/meshnode --socket /run/meshnode/control.sock\n" in text
    )
    assert text.replace(IN_IMAGE, service.SYSTEM_EXECUTABLE) == service.SYSTEM_UNIT

    assert (root / "etc/sysusers.d/meshnode.conf").read_text() == service.SYSUSERS
    uid, gid = service.lookup_user("meshnode", root) or (None, None)
    assert uid is not None and gid is not None, (root / "etc/passwd").read_text()

    etc = root / "etc/meshnode"
    assert (mode(etc), etc.stat().st_uid, etc.stat().st_gid) == (0o750, 0, gid)
    config = etc / "config.toml"
    assert (mode(config), config.stat().st_uid, config.stat().st_gid) == (0o640, uid, gid)
    assert config.read_text() == service.CONFIG_TEMPLATE

    for said in ("wrote /etc/systemd/system/meshnode.service", "created /etc/meshnode"):
        assert said in out
    # The next steps are the image's, not this host's.
    assert f"systemctl --root {root} enable meshnode" in out
    assert "sudo systemctl enable --now" not in out
    assert "usermod -aG meshnode <user>" in out


@needs_sysusers
def test_a_second_install_changes_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = image(tmp_path)
    args = ("install", "--root", str(root), "--executable", IN_IMAGE)
    assert main(capsys, *args)[0] == 0
    before = tree(root)
    code, out, _ = main(capsys, *args)
    assert code == 0
    assert tree(root) == before
    assert "nothing changed" in out
    assert not any(
        line.strip().startswith(("wrote", "created", "updated")) for line in out.splitlines()
    )


def test_the_config_template_parses_to_nothing_but_comments() -> None:
    import tomllib

    assert tomllib.loads(service.CONFIG_TEMPLATE) == {}


def test_an_existing_config_file_is_left_as_it_is(tmp_path: Path) -> None:
    root = image(tmp_path)
    config = root / "etc/meshnode/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('listen = [":7000"]\n')
    report = install(root, FakeHost())
    assert config.read_text() == 'listen = [":7000"]\n'
    assert "found /etc/meshnode/config.toml: left as it is" in texts(report)


def test_a_unit_changed_by_hand_is_rewritten_and_reported(tmp_path: Path) -> None:
    root = image(tmp_path)
    install(root, FakeHost())
    unit = root / "etc/systemd/system/meshnode.service"
    unit.write_text(unit.read_text().replace("RestartSec=5", "RestartSec=1"))
    report = install(root, FakeHost())
    assert "updated /etc/systemd/system/meshnode.service" in texts(report)
    assert "RestartSec=5" in unit.read_text()


def test_a_wrong_mode_on_etc_meshnode_is_put_right(tmp_path: Path) -> None:
    root = image(tmp_path)
    install(root, FakeHost())
    (root / "etc/meshnode").chmod(0o755)
    report = install(root, FakeHost())
    assert mode(root / "etc/meshnode") == 0o750
    assert report.changed


def test_without_sysusers_an_image_gets_its_user_at_first_boot(tmp_path: Path) -> None:
    root = image(tmp_path)
    report = install(root, FakeHost())
    said = texts(report)
    assert any("skipped the system user and group meshnode" in t for t in said)
    assert any(t.startswith("left owners as they are") for t in said)
    assert (root / "etc/sysusers.d/meshnode.conf").exists()  # what the image's sysusers reads


def test_an_image_install_never_calls_systemctl(tmp_path: Path) -> None:
    fake = FakeHost(booted=True)
    report = install(image(tmp_path), fake)
    assert fake.ran == []
    assert any(t.startswith("skipped systemctl daemon-reload") for t in texts(report))


def test_a_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = image(tmp_path)
    before = tree(root)
    code, out, _ = main(
        capsys, "install", "--dry-run", "--root", str(root), "--executable", IN_IMAGE
    )
    assert code == 0
    assert tree(root) == before
    assert "would write /etc/systemd/system/meshnode.service" in out
    assert "would create /etc/meshnode (root:meshnode 0750)" in out
    assert "dry run: nothing was changed" in out


def test_json_says_what_a_dry_run_would_do_in_one_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = image(tmp_path)
    argv = ("install", "--dry-run", "--json", "--root", str(root), "--executable", IN_IMAGE)
    code, out, _ = main(capsys, *argv)
    assert code == 0
    report = json.loads(out)  # one object, and nothing else on stdout
    assert {k: report[k] for k in ("action", "scope", "root", "dry_run", "changed")} == {
        "action": "install",
        "scope": "system",
        "root": str(root),
        "dry_run": True,
        "changed": True,
    }
    assert {"text": "would write /etc/systemd/system/meshnode.service", "changed": True} in (
        report["steps"]
    )
    assert report["next_steps"]


def test_the_system_service_without_root_is_refused_with_a_hint_to_use_sudo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, _, err = main(capsys, "install")
    assert code == 1
    assert "sudo meshnode service install" in err
    assert "--user" in err


def test_root_is_needed_only_for_this_machines_system_service() -> None:
    command = ("/opt/meshnode/bin/meshnode",)
    with pytest.raises(service.NeedsRoot):
        service.require_root(service.Target(command=command), euid=1000)
    service.require_root(service.Target(command=command, user=True), euid=1000)
    service.require_root(service.Target(command=command, dry_run=True), euid=1000)
    service.require_root(service.Target(command=command, root=Path("/img")), euid=1000)
    service.require_root(service.Target(command=command), euid=0)


def test_bad_paths_are_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(capsys, "install", "--root", str(tmp_path / "nowhere"))[0] == 2
    assert main(capsys, "install", "--dry-run", "--executable", "bin/meshnode")[0] == 2
    code, _, err = main(capsys, "install", "--dry-run", "--executable", str(tmp_path))
    assert code == 2
    assert "not an executable file" in err


# -- where the service's program is --------------------------------------------------------


def test_a_program_in_a_home_directory_gets_a_warning_that_says_what_to_do() -> None:
    [warning] = service.reachability(("/home/pi/venv/bin/meshnode",), None, None)
    assert "/home/pi/venv/bin/meshnode is under /home" in warning
    assert "ProtectHome=yes" in warning
    assert "sudo python3 -m venv /opt/meshnode" in warning


def test_a_program_the_service_user_cannot_reach_gets_a_warning(tmp_path: Path) -> None:
    root = image(tmp_path)
    (root / "opt/meshnode").chmod(0o700)  # a venv inside a private directory
    [warning] = service.reachability((IN_IMAGE,), root, (999, 999))
    assert f"the meshnode user cannot read {IN_IMAGE}" in warning


def test_the_interpreter_a_script_names_is_checked_too(tmp_path: Path) -> None:
    root = image(tmp_path)
    (root / "opt/meshnode/bin/python3").chmod(0o700)
    [warning] = service.reachability((IN_IMAGE,), root, (999, 999))
    assert "cannot read /opt/meshnode/bin/python3" in warning
    assert service.reachability((IN_IMAGE,), root, (0, 0)) == []  # its owner can


def test_a_reachable_program_gets_no_warning(tmp_path: Path) -> None:
    assert service.reachability((IN_IMAGE,), image(tmp_path), (999, 999)) == []


def test_the_unit_starts_the_meshnode_that_runs_the_installer(tmp_path: Path) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script, python = bin_dir / "meshnode", bin_dir / "python"
    for path in (script, python):
        path.write_text("")
        path.chmod(0o755)
    link = tmp_path / "meshnode"
    link.symlink_to(script)
    assert service.find_command(str(link), str(python)) == (str(script),)  # resolved
    assert service.find_command("meshnode", str(python), lambda _: str(link)) == (str(script),)
    # python -m meshnode: the script beside the interpreter
    assert service.find_command("/x/meshnode/__main__.py", str(python)) == (str(script),)
    script.unlink()
    assert service.find_command("/x/meshnode/__main__.py", str(python)) == (
        str(python),
        "-m",
        "meshnode",
    )


def test_useradd_makes_a_system_user_without_a_login() -> None:
    argv = service.useradd_argv("/usr/sbin/useradd", group_exists=False)
    assert argv[:3] == ["/usr/sbin/useradd", "--system", "--user-group"]
    assert argv[-1] == "meshnode"
    assert argv[argv.index("--home-dir") + 1] == "/var/lib/meshnode"
    assert (
        "nologin" in argv[argv.index("--shell") + 1] or "false" in argv[argv.index("--shell") + 1]
    )
    assert service.useradd_argv("useradd", group_exists=True)[2:4] == ["--gid", "meshnode"]


# -- the user service ----------------------------------------------------------------------


def user_target(tmp_path: Path, **kwargs: object) -> service.Target:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    return service.Target(command=(sys.executable, "-m", "meshnode"), user=True, env=env, **kwargs)  # type: ignore[arg-type]


def test_a_user_install_writes_the_user_unit_and_reloads_the_user_manager(tmp_path: Path) -> None:
    fake = FakeHost(user_manager=True)
    report = service.install(user_target(tmp_path), fake.host, lambda step: None)
    unit = tmp_path / "config/systemd/user/meshnode.service"
    assert f"\nExecStart={sys.executable} -m meshnode run\n" in unit.read_text()
    assert mode(unit) == 0o644
    config = tmp_path / "config/meshnode/config.toml"
    assert mode(config) == 0o600
    assert fake.ran == [["systemctl", "--user", "daemon-reload"]]
    assert "systemctl --user enable --now meshnode" in report.next_steps
    assert any(line.startswith("loginctl enable-linger") for line in report.next_steps)

    again = service.install(user_target(tmp_path), fake.host, lambda step: None)
    assert not again.changed
    assert fake.ran == [["systemctl", "--user", "daemon-reload"]]  # nothing new to reload


def test_a_user_install_through_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    code, out, _ = main(capsys, "install", "--user")
    assert code == 0
    assert "wrote " + str(tmp_path / "config/systemd/user/meshnode.service") in out
    assert "skipped systemctl --user daemon-reload: no user systemd manager runs here" in out
    code, out, _ = main(capsys, "install", "--user")
    assert "nothing changed" in out


def test_a_failed_daemon_reload_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    def refuse(argv: Sequence[str]) -> None:
        raise service.ServiceError(f"{' '.join(argv)} failed (exit 1): no bus")

    host = service.Host(euid=0, booted=False, user_manager=True, run=refuse)
    report = service.install(user_target(tmp_path), host, lambda step: None)
    assert any("run it yourself: systemctl --user daemon-reload" in w for w in report.warnings)


# -- uninstall -----------------------------------------------------------------------------


def test_uninstall_removes_the_unit_and_its_links_and_keeps_the_data_and_config(
    tmp_path: Path,
) -> None:
    root = image(tmp_path)
    install(root, FakeHost())
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir()
    (wants / "meshnode.service").symlink_to("/etc/systemd/system/meshnode.service")
    state = root / "var/lib/meshnode"
    state.mkdir(parents=True)
    (state / "identity.key").write_text("kept")

    report = service.uninstall(target(root), FakeHost().host, lambda step: None)
    assert not (root / "etc/systemd/system/meshnode.service").exists()
    assert not (wants / "meshnode.service").is_symlink()
    assert (state / "identity.key").read_text() == "kept"
    assert (root / "etc/meshnode/config.toml").exists()
    assert any(t.startswith("kept /var/lib/meshnode") for t in texts(report))

    again = service.uninstall(target(root), FakeHost().host, lambda step: None)
    assert not again.changed


def test_uninstall_stops_and_disables_a_running_user_service(tmp_path: Path) -> None:
    fake = FakeHost(user_manager=True)
    service.install(user_target(tmp_path), fake.host, lambda step: None)
    service.uninstall(user_target(tmp_path), fake.host, lambda step: None)
    assert fake.ran[1:] == [
        ["systemctl", "--user", "disable", "--now", "meshnode.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert not (tmp_path / "config/systemd/user/meshnode.service").exists()


# -- helpers -------------------------------------------------------------------------------


def target(root: Path) -> service.Target:
    return service.Target(command=(IN_IMAGE,), root=root)


def install(root: Path, fake: FakeHost) -> service.Report:
    return service.install(target(root), fake.host, lambda step: None)


def texts(report: service.Report) -> list[str]:
    return [step.text for step in report.steps]
