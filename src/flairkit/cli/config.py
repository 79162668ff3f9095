"""``flair config``: show or validate a resolved configuration."""

from __future__ import annotations

import typer

from flairkit.cli.common import ConfigOption, SetOption, console, guarded, resolve_config
from flairkit.config import config_to_yaml

config_app = typer.Typer(help="Show or validate configurations.", no_args_is_help=True)


@config_app.command("show")
@guarded
def show_command(config: ConfigOption = None, overrides: SetOption = None) -> None:
    """Print the fully resolved config (defaults + preset/YAML + overrides) as YAML."""
    console.print(config_to_yaml(resolve_config(config, overrides)), markup=False, highlight=False, soft_wrap=True)


@config_app.command("validate")
@guarded
def validate_command(config: ConfigOption = None, overrides: SetOption = None) -> None:
    """Check a config; exit code 0 when valid, 2 with the offending keys otherwise."""
    resolved = resolve_config(config, overrides)
    console.print(f"[green]valid[/]: {resolved.name}")


@config_app.command("reference")
def reference_command() -> None:
    """Print every config key with its default and description (markdown)."""
    from flairkit.config.reference import reference_markdown

    console.print(reference_markdown(), markup=False, highlight=False, soft_wrap=True)
