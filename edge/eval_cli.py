"""`careloop eval`: score the edge's detectors on recordings (registered as an entry point in pyproject.toml)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("eval")
def eval_group() -> None:
    """Score detectors on recorded data."""


@eval_group.command("falls")
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a dataset folder (trials.csv + trials/) or a folder of them, e.g. ../shared/data/falls",
)
@click.option("--json", "as_json", is_flag=True, help='print one JSON object: {"datasets": {name: scores}}')
@click.option(
    "--placement",
    type=click.Choice(["auto", "wrist", "waist"]),
    default="auto",
    show_default=True,
    help="run every trial with this placement's model (auto: each trial's own, from trials.csv)",
)
@click.option(
    "--cv",
    is_flag=True,
    help="leave-one-subject-out cross-validation instead: retrain without each subject, score it (slower)",
)
def falls(data: Path, as_json: bool, placement: str, cv: bool) -> None:
    """Stream every trial through the agent's fall detector in one-second chunks and score it per dataset.

    Without --cv the shipped model is scored on these recordings (in-sample for the shared data it was trained
    on); with --cv every subject is scored by a model trained without them.
    """
    from careloop.recordings import RecordingError
    from edge.eval import DatasetError, evaluate, find_datasets, format_table

    try:
        folders = find_datasets(data)
        if cv:
            from edge.train_falls import cv_scores

            scores = cv_scores(folders, placement=placement)
            title = "fall detector, leave-one-subject-out cross-validation"
        else:
            scores = evaluate(folders, placement)
            title = "fall detector (shipped model)"
    except (DatasetError, RecordingError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"datasets": scores}, indent=2))
    else:
        click.echo(format_table(scores, title))
