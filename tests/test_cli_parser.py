"""The command line is parsed by a parser of the one command it names, and means the same.

Building every command's parser costs a sixth of a CLI call's start, so ``parse_args``
builds only the one named; the whole parser is the reference it must agree with.
"""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from meshnode.client import cli

LINES = [
    ["run"],
    ["run", "--no-mdns", "--listen", "127.0.0.1:0", "--peer", "192.0.2.1:7744"],
    ["--data-dir", "/tmp/a", "run", "--log-level", "debug"],
    ["--data-dir=/tmp/a", "--socket", "/tmp/s", "status", "--json"],
    ["id"],
    ["peers", "--all", "--json"],
    ["peers", "--bans"],
    ["unban", "node1abc"],
    ["doctor", "--json"],
    ["publish", "profile/name", "Ada", "--ttl", "3h"],
    ["publish", "--json-value", '{"a": 1}', "k"],
    ["get", "profile/name", "--author", "node1abc", "--socket=/tmp/s"],
    ["query", "--prefix", "offer/", "--limit", "5", "--deleted", "--since-seq", "3"],
    ["delete", "k"],
    ["watch", "--prefix", "p/", "--exec", "echo hi", "--exec-timeout", "2"],
    ["sync", "--wait"],
    ["export", "out.bundle", "--prefix", "p/"],
    ["import", "-", "--config", "/tmp/c.toml"],
    ["config", "show", "--json"],
    ["config", "reload"],
    ["config", "path"],
    ["network", "new", "--qr"],
    ["network", "join", "mesh1xyz", "--force"],
    ["network", "leave", "--json"],
    ["network", "show", "--reveal"],
    ["service", "install", "--user"],
    ["service", "uninstall"],
]


def meaning(args: argparse.Namespace) -> dict[str, object]:
    """A namespace with its handlers named, since a fresh parser makes fresh closures."""
    return {
        name: getattr(value, "__wrapped__", value) if callable(value) else value
        for name, value in vars(args).items()
    }


def test_the_whole_parser_lists_every_command_in_order() -> None:
    choices = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert tuple(choices) == cli.COMMANDS


@pytest.mark.parametrize("line", LINES, ids=" ".join)
def test_a_line_means_what_the_whole_parser_makes_of_it(line: list[str]) -> None:
    whole = cli.build_parser().parse_args(line)
    assert meaning(cli.parse_args(line)) == meaning(whole)


def test_every_command_is_covered_by_a_line_above() -> None:
    assert {cli._named_command(line) for line in LINES} == set(cli.COMMANDS)


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_a_commands_help_is_the_same_from_its_own_parser(command: str) -> None:
    def help_of(parser: argparse.ArgumentParser) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        return out.getvalue()

    assert help_of(cli.build_parser(command)) == help_of(cli.build_parser())


@pytest.mark.parametrize(
    "line",
    [
        [],
        ["--help"],
        ["--version"],
        ["publis", "k"],
        ["--data", "/tmp/a", "get", "k"],  # an abbreviated option: argparse's to read
        ["--socket"],
    ],
    ids=repr,
)
def test_anything_else_goes_to_the_whole_parser(line: list[str]) -> None:
    assert cli._named_command(line) is None


@pytest.mark.parametrize(
    ("line", "usage"),
    [
        (["run", "--bogus"], "usage: meshnode run "),
        (["config", "path", "--bogus"], "usage: meshnode config path "),
        (["--bogus", "status"], "usage: meshnode status "),
    ],
    ids=repr,
)
def test_an_unknown_option_is_told_with_its_commands_usage(line: list[str], usage: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        cli.parse_args(line)
    assert exited.value.code == 2
    assert err.getvalue().startswith(usage) and "unrecognized arguments: --bogus" in err.getvalue()


def test_a_commands_own_option_given_before_it_is_told_where_it_goes() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        cli.parse_args(["--json", "status"])
    assert "(options of status go after it: meshnode status --json)" in err.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        cli.parse_args(["--json", "config", "show"])
    assert "(options of config show go after it: meshnode config show --json)" in err.getvalue()


def test_bans_and_all_are_two_lists_not_one() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        cli.parse_args(["peers", "--bans", "--all"])
    assert "not allowed with argument --bans" in err.getvalue()


def test_log_levels_are_taken_in_any_case() -> None:
    assert cli.parse_args(["run", "--log-level", "DEBUG"]).log_level == "debug"


def test_a_negative_duration_is_read_as_the_option_s_value_but_not_past_a_double_dash() -> None:
    from meshnode.client.cli import parse_args

    assert parse_args(["publish", "k", "--ttl", "-5m", "v"]).ttl == "-5m"
    assert parse_args(["watch", "--exec", "true", "--exec-timeout", "-1s"]).exec_timeout == "-1s"
    as_words = parse_args(["publish", "k", "--", "--ttl"])
    assert (as_words.ttl, as_words.value) == (None, "--ttl")
