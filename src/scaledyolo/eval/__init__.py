"""Evaluation: `validate` (per-epoch and `scaledyolo val`), COCO JSON and pycocotools figures (`coco`),
our fast COCO-rule matcher, P/R and confusion matrix (`metrics`), pictures (`plots`), TTA (`tta`)."""
