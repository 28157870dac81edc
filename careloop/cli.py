"""The `careloop` command line.

The kernel's own commands live here; each component adds its commands through the `careloop.commands` entry
point group in pyproject.toml, so the kernel never imports a component. Component commands load only when run.
"""

from __future__ import annotations

import importlib
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from careloop import __version__

# Kernel command groups: name -> "module:attribute", imported only when used (start-up stays fast).
_KERNEL_COMMANDS = {
    "config": "careloop.cli:config",
    "contract": "careloop.cli:contract",
    "registry": "careloop.registry.cli:registry",
    "demo": "careloop.cli:demo",
}


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported when invoked: the kernel's and the components' entry points."""

    def _sources(self) -> dict[str, str]:
        found = {ep.name: ep.value for ep in entry_points(group="careloop.commands")}
        return {**found, **_KERNEL_COMMANDS}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self._sources()) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        target = self._sources().get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise click.ClickException(f"entry point {cmd_name!r} ({target}) is not a click command")
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="careloop")
def cli() -> None:
    """careloop: eldercare monitoring, from bracelet to nurse."""


@click.group()
def config() -> None:
    """Inspect configuration."""


@config.command("check")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML settings file (default: $CARELOOP_CONFIG, if set)",
)
def config_check(config_file: Path | None) -> None:
    """Print the effective settings (secrets masked), or every error; exit status 2 on errors."""
    from careloop.settings import SettingsError, load_settings, masked

    try:
        settings = load_settings(config_file)
    except SettingsError as exc:
        click.echo("configuration is invalid:", err=True)
        for where, what in exc.problems:
            click.echo(f"  {where}: {what}", err=True)
        sys.exit(2)
    click.echo(json.dumps(masked(settings), indent=2, sort_keys=True))


@click.group()
def contract() -> None:
    """The MQTT wire contract."""


@contract.command("docs")
@click.option(
    "--write",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="update the generated section of this file (e.g. docs/protocol.md) instead of printing it",
)
@click.option("--check", is_flag=True, help="with --write: exit 1 if the file is out of date, change nothing")
def contract_docs(target: Path | None, check: bool) -> None:
    """Print (or write into docs/protocol.md) the topic table, field tables and examples of the contract."""
    from careloop.protocol_doc import generated_section, splice

    section = generated_section()
    if target is None:
        click.echo(section, nl=False)
        return
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    updated = splice(current, section)
    if check:
        if updated != current:
            raise click.ClickException(f"{target} is out of date: run `careloop contract docs --write {target}`")
        return
    target.write_text(updated, encoding="utf-8")


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="where the demo keeps its SQLite database and files",
)
def demo(workdir: Path) -> None:
    """Run the zero-setup demo: embedded MQTT broker, SQLite, and every component that joins the demo."""
    import asyncio

    from careloop.demo import run_demo

    asyncio.run(run_demo(workdir))


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="careloop")
