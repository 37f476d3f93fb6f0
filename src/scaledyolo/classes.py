"""Class names every reader of foreign weights needs: COCO's 80, which official and darknet weights are trained on.

On the ground floor so that loading weights (interop), evaluation (eval) and prediction take the same
list without importing each other.
"""

from __future__ import annotations

# The 80 COCO detection classes in the order every YOLO release uses.
COCO80_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]


def default_names(num_classes: int) -> list[str]:
    """COCO's names for 80-class models (what official and darknet weights are trained on), else indices."""
    if num_classes == 80:
        return list(COCO80_NAMES)
    return [str(i) for i in range(num_classes)]
