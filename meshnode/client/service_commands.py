"""``meshnode service install|uninstall``: the systemd unit, for the system or a user session.

The work is in ``meshnode.system.service`` (blocking OS glue), imported inside
the commands: it runs ``subprocess`` and reads the user database, which a
``meshnode status`` has no use for. These commands need no daemon. Exit codes:
0 done (or nothing to do), 1 it failed or needs root, 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

from meshnode.client.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

TYPE_CHECKING = False
if TYPE_CHECKING:
    from meshnode.system.service import Report, Step, Target


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
    formatter_class: type[argparse.HelpFormatter],
) -> None:
    """Add ``service`` and its actions to the ``meshnode`` parser's subcommands."""
    service = sub.add_parser(
        "service", help="install meshnode as a systemd service", formatter_class=formatter_class
    )
    actions = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    scope = argparse.ArgumentParser(add_help=False, formatter_class=formatter_class)
    scope.add_argument(
        "--user",
        action="store_true",
        help="the user unit (~/.config/systemd/user) for a desktop session, not the system's",
    )
    scope.add_argument(
        "--dry-run", action="store_true", help="print what it would do and change nothing"
    )
    scope.add_argument(
        "--root",
        metavar="DIR",
        help="install into the image at DIR (paths prefixed, no systemctl)",
    )
    scope.add_argument(
        "--json", action="store_true", help="print one JSON object at the end, not each step"
    )
    install = actions.add_parser(
        "install",
        parents=[*parents, scope],
        help="write the unit (and, for the system, its user, group and /etc/meshnode)",
        description="Idempotent: a second run changes nothing and says so.",
        formatter_class=formatter_class,
    )
    install.add_argument(
        "--executable",
        metavar="PATH",
        help="the meshnode the unit starts (default: the one running this command)",
    )
    install.set_defaults(handler=None, offline=cmd_install)
    uninstall = actions.add_parser(
        "uninstall",
        parents=[*parents, scope],
        help="stop, disable and remove the unit; never the data, the user or the config",
        formatter_class=formatter_class,
    )
    uninstall.set_defaults(handler=None, offline=cmd_uninstall)


def cmd_install(args: argparse.Namespace) -> int:
    return _run(args, install=True)


def cmd_uninstall(args: argparse.Namespace) -> int:
    return _run(args, install=False)


def _run(args: argparse.Namespace, *, install: bool) -> int:
    from pathlib import Path

    from meshnode.system import service

    def say(step: Step) -> None:
        if not args.json:
            _out(f"  {step.text}")

    try:
        target = service.Target(
            command=_command(getattr(args, "executable", None), args.root),
            user=args.user,
            root=None if args.root is None else Path(os.path.abspath(args.root)),
            dry_run=args.dry_run,
            env=os.environ,
        )
        if target.root is not None and not target.root.is_dir():
            raise _BadInput(f"--root {args.root} is not a directory")
        kind = "user" if target.user else "system"
        where = "" if target.root is None else f" into {target.root}"
        doing = "installing" if install else "removing"
        dry = " (dry run: nothing is changed)" if target.dry_run else ""
        if not args.json:
            _out(f"{doing} the meshnode {kind} service{where}{dry}")
        run = service.install if install else service.uninstall
        report = run(target, service.Host.current(os.environ), say)
    except _BadInput as exc:
        return _fail(EXIT_BAD_INPUT, str(exc))
    except service.ServiceError as exc:
        return _fail(EXIT_FAILED, str(exc))
    if args.json:
        from meshnode.core.jsonview import dumps

        _out(dumps(_as_json(report, target, install=install)))
        _warn(report.warnings)
    else:
        _summary(report, dry_run=target.dry_run, install=install)
    return EXIT_OK


def _as_json(report: Report, target: Target, *, install: bool) -> dict[str, object]:
    return {
        "action": "install" if install else "uninstall",
        "scope": "user" if target.user else "system",
        "root": None if target.root is None else str(target.root),
        "dry_run": target.dry_run,
        "changed": report.changed,
        "steps": [{"text": step.text, "changed": step.changed} for step in report.steps],
        "warnings": report.warnings,
        "next_steps": report.next_steps,
    }


class _BadInput(Exception):
    pass


def _command(executable: str | None, root: str | None) -> tuple[str, ...]:
    """What the unit starts: ``--executable`` (a path inside the image, with ``--root``),
    else the ``meshnode`` running now."""
    from meshnode.system import service

    if executable is None:
        return service.find_command(sys.argv[0], sys.executable)
    if not os.path.isabs(executable):
        raise _BadInput(f"--executable {executable}: give an absolute path")
    if root is None and not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        raise _BadInput(f"--executable {executable} is not an executable file")
    return (executable,)


def _summary(report: Report, *, dry_run: bool, install: bool) -> None:
    if not report.changed:
        _out("nothing changed: all was already in place" if install else "nothing changed")
    elif dry_run:
        _out("dry run: nothing was changed")
    _warn(report.warnings)
    if report.next_steps and not dry_run:
        _out("next:\n" + "\n".join(f"  {line}" for line in report.next_steps))


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        sys.stderr.write(f"meshnode: warning: {warning}\n")


def _out(line: str) -> None:
    """One line on stdout, at once: each step shows as it ends."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _fail(code: int, message: str) -> int:
    sys.stderr.write(f"meshnode: {message}\n")
    return code
