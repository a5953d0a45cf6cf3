"""`--help` of every chatmq command: present, and offering only what the command uses."""

from __future__ import annotations

import re

import click
from click.testing import CliRunner

from chatmq.cli.main import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found += _commands(command, path)
    return found


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for path in _commands(cli):
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: " in result.output and "-h, --help" in result.output, path


def test_the_broker_offers_no_http_port() -> None:
    output = CliRunner().invoke(cli, ["broker", "--help"]).output
    assert "--http-port" not in output
    assert "--mqtt-port" in output and "--ws-port" in output
    assert "--http-port" in CliRunner().invoke(cli, ["up", "--help"]).output


def test_log_level_default_is_one_of_its_choices() -> None:
    output = CliRunner().invoke(cli, ["--help"]).output
    choices = re.search(r"--log-level \[([a-z|]+)\]", output)
    default = re.search(r"\[default: (\w+)\]", output)
    assert choices is not None and default is not None, output
    assert default.group(1) in choices.group(1).split("|")


def test_options_named_in_help_exist_on_that_command() -> None:
    """An option's help that sends the reader to another option (`[default: --mqtt-port]`) names one
    the same command has (the API and the bridge have no --mqtt-port)."""
    for path in _commands(cli):
        command: click.Command = cli
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        offered = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for param in command.params:
            own_words = re.sub(r"`[^`]*`", "", getattr(param, "help", None) or "")  # `chatmq x --y`: another command
            for named in re.findall(r"(?<![\w-])--[a-z][a-z-]+", own_words):
                assert named in offered, (path, param.name, named)
