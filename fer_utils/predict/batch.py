"""The photo batch job, in the library as the video one is (:func:`fer_utils.predict.video.analyze_videos`):
photos predicted in order with a progress bar, a stop keeping what was done, and with a Parquet
run folder, the photos an earlier run did left out and each batch written as it ends. ``fer
predict`` parses its flags and calls this; so can a script."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fer_utils.data.images import NOT_REACHED, Skipped
from fer_utils.faces.results import ImageResult, photo_output_columns, prediction_rows
from fer_utils.predict.parquet import PHOTOS_PER_FILE, ParquetRun
from fer_utils.predict.predictor import Predictor


@dataclass
class PhotoReport:
    """What a photo batch did: each result, each photo skipped (with why; ``NOT_REACHED`` after a
    stop), and with a Parquet folder, the photos an earlier run had done and those changed since."""

    results: list[ImageResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """True when a stop (Ctrl-C, SIGTERM) ended the batch before every photo."""
        return any(s.reason == NOT_REACHED for s in self.skipped)


def predict_photos(
    predictor: Predictor,
    files: Sequence[Path],
    parquet: ParquetRun | None = None,
    detect: bool | None = None,
    progress: bool = False,
) -> PhotoReport:
    """Every photo's result (or why it was skipped). A stop keeps the results so far. With
    ``parquet``, photos done there by an earlier run of the same model and options are left out
    (``resumed``) and each batch of ``PHOTOS_PER_FILE`` is written as it ends, so a stopped run
    loses at most one batch."""
    report = PhotoReport()
    if parquet is None:
        report.results, report.skipped = predictor.predict_images(
            files, detect=detect, progress=progress, keep_on_interrupt=True
        )
        return report
    todo, report.resumed, report.changed = parquet.plan(files)
    for start in range(0, len(todo), PHOTOS_PER_FILE):
        batch = todo[start : start + PHOTOS_PER_FILE]
        got, skipped = predictor.predict_images(batch, detect=detect, progress=progress, keep_on_interrupt=True)
        report.results += got
        report.skipped += skipped
        if report.interrupted:  # stopped: this batch is done again next time
            report.skipped += [Skipped(str(f), NOT_REACHED) for f in todo[start + PHOTOS_PER_FILE :]]
            break
        columns = photo_output_columns(predictor.classes)
        parquet.write(batch, prediction_rows(got, skipped), f"photos-{start // PHOTOS_PER_FILE}", columns)
    return report
