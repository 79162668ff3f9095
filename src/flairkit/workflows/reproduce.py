"""``flair reproduce``: train and evaluate a published configuration, then set our figures beside the paper's.

Nothing is printed: the metrics and the comparison come back in a :class:`ReproduceResult` (``flair reproduce``
renders them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flairkit.config.schema import FlairConfig
from flairkit.errors import ConfigError
from flairkit.evaluation.compare import CompareResult, compare_runs, write_comparison
from flairkit.evaluation.predict import evaluate, evaluate_hub
from flairkit.evaluation.protocols import Metrics
from flairkit.training.run import TrainResult, train

EVALUATION_DIR = "evaluation"


@dataclass
class ReproduceResult:
    """The training run, its test metrics and the side-by-side comparison with the publication."""

    train: TrainResult
    metrics: Metrics
    """Of the main task with FLAIR-HUB's multimodal network (``model.hub``: the first of data.hub.labels)."""
    comparison: CompareResult
    files: dict[str, Path]
    task_metrics: dict[str, Metrics] = field(default_factory=dict)
    """With ``model.hub``, every task's metrics by folder under ``evaluation/`` (LPIS at each level); else empty."""


def reproduce(
    config: FlairConfig,
    *,
    overwrite: bool = False,
    training_progress: bool = False,
    evaluation_progress: Callable[[int, int], None] | None = None,
) -> ReproduceResult:
    """Train ``config``, evaluate its best checkpoint on the test split with the publication's protocol, compare.

    With FLAIR-HUB's multimodal network (``model.hub``) every task is scored (``evaluation/<TASK>/metrics/``) and the
    main task, the first of data.hub.labels, is the one set beside the published figures.

    ``training_progress`` shows Lightning's progress bar; ``evaluation_progress`` is called as (patches done,
    total) while the test split is predicted.
    """
    from flairkit.models.build import build_model
    from flairkit.models.hub import load_hub_weights
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
    evaluation_dir = trained.run_dir / EVALUATION_DIR
    task_metrics: dict[str, Metrics] = {}
    if config.model.hub is not None:
        network = build_model(config, pretrained_encoder=False)
        load_hub_weights(network, trained.best_checkpoint)
        task_metrics = evaluate_hub(
            config,
            network,
            evaluation_dir,
            overwrite=overwrite,
            progress=evaluation_progress,
            weights=trained.best_checkpoint,
        )
        main = config.data.hub.labels[0]
        metrics, scored = task_metrics[main], evaluation_dir / main
    else:
        model = load_model(config, trained.best_checkpoint)
        metrics = evaluate(config, model, evaluation_dir, overwrite=overwrite, progress=evaluation_progress)
        scored = evaluation_dir
    comparison = compare_runs([scored], published=[config.published], labels=[config.name])
    files = write_comparison(comparison, trained.run_dir / "comparison", overwrite=overwrite)
    return ReproduceResult(trained, metrics, comparison, files, task_metrics)
