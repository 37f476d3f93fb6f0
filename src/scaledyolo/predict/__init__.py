"""Detection on pictures (library only): `predict` -> one `Results` per picture; `run_predict` writes a run folder.

`predictor` (letterbox, forward, NMS, boxes back to original pixels), `results` (`Results`, `Boxes`),
`run` (annotated pictures, videos, labels, crops and JSON in a run folder), `display` (`--show`).
"""

from scaledyolo.predict.predictor import STAGES, Predictor, predict, preprocess
from scaledyolo.predict.results import Boxes, Results
from scaledyolo.predict.run import format_counts, picture_line, run_predict

__all__ = ["STAGES", "Boxes", "Predictor", "Results", "format_counts", "picture_line", "predict", "preprocess",
           "run_predict"]
