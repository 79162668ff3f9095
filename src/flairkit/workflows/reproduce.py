"""``flair reproduce``: train and evaluate a published configuration, then set our figures beside the paper's.

Nothing is printed: the metrics and the comparison come back in a :class:`ReproduceResult` (``flair reproduce``
renders them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flairkit.config.schema import FlairConfig
from flairkit.errors import ConfigError
from flairkit.evaluation.compare import CompareResult, compare_runs, write_comparison
from flairkit.evaluation.predict import evaluate
from flairkit.evaluation.protocols import Metrics
from flairkit.training.run import TrainResult, train

EVALUATION_DIR = "evaluation"


@dataclass
class ReproduceResult:
    """The training run, its test metrics and the side-by-side comparison with the publication."""

    train: TrainResult
    metrics: Metrics
    comparison: CompareResult
    files: dict[str, Path]


def reproduce(
    config: FlairConfig,
    *,
    overwrite: bool = False,
    training_progress: bool = False,
    evaluation_progress: Callable[[int, int], None] | None = None,
) -> ReproduceResult:
    """Train ``config``, evaluate its best checkpoint on the test split with the publication's protocol, compare.

    ``training_progress`` shows Lightning's progress bar; ``evaluation_progress`` is called as (patches done,
    total) while the test split is predicted.
    """
    from flairkit.models.loader import load_model

    if config.published is None:
        raise ConfigError(
            f"config {config.name!r} has no published figures to compare with; choose a paper or model-card preset "
            "(`flair models` lists them) or use `flair train` + `flair evaluate`"
        )
    config.evaluate.protocol = config.published.protocol
    trained = train(config, overwrite=overwrite, progress=training_progress)
    if trained.best_checkpoint is None:
        raise ConfigError("training produced no checkpoint; check train.max_epochs and the validation split")
    model = load_model(config, trained.best_checkpoint)
    evaluation_dir = trained.run_dir / EVALUATION_DIR
    metrics = evaluate(config, model, evaluation_dir, overwrite=overwrite, progress=evaluation_progress)
    comparison = compare_runs([evaluation_dir], published=[config.published], labels=[config.name])
    files = write_comparison(comparison, trained.run_dir / "comparison", overwrite=overwrite)
    return ReproduceResult(trained, metrics, comparison, files)
