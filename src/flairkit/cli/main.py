"""The ``flair`` command line: one module per command, each a thin layer over the library."""

from __future__ import annotations

import typer

from flairkit.cli.common import print_warnings_once
from flairkit.cli.compare import compare_command
from flairkit.cli.config import config_app
from flairkit.cli.data import data_app
from flairkit.cli.demo import demo_command
from flairkit.cli.detect import detect_command
from flairkit.cli.download import download_command
from flairkit.cli.evaluate import evaluate_command
from flairkit.cli.export import export_command
from flairkit.cli.metrics import metrics_command
from flairkit.cli.models import models_command
from flairkit.cli.predict import predict_command
from flairkit.cli.reproduce import reproduce_command
from flairkit.cli.train import train_command

app = typer.Typer(
    name="flair",
    help="Land-cover mapping from aerial and satellite imagery (FLAIR #1, FLAIR #2, zone detection).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("train")(train_command)
app.command("predict")(predict_command)
app.command("evaluate")(evaluate_command)
app.command("metrics")(metrics_command)
app.command("detect")(detect_command)
app.command("models")(models_command)
app.command("export")(export_command)
app.command("reproduce")(reproduce_command)
app.command("compare")(compare_command)
app.command("demo")(demo_command)
app.add_typer(config_app, name="config")
data_app.command("download")(download_command)
app.add_typer(data_app, name="data")


def main() -> None:
    """Entry point of the ``flair`` console script."""
    print_warnings_once()
    app()


if __name__ == "__main__":
    main()
