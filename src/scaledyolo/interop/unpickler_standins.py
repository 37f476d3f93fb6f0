"""What a foreign pickle's classes become: inert stand-ins, argument-only markers, and the refusal of the rest.

The official model classes are never imported: each allowed class name resolves to a stand-in that
merely collects the state the file gives it (none of their code exists or runs here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The official classes a Scaled-YOLOv4 checkpoint pickles (yolov4-large branch, train.py / strip_optimizer).
STANDIN_CLASSES = frozenset({
    "models.yolo.Model", "models.yolo.Detect",
    "models.common.Conv", "models.common.Bottleneck", "models.common.BottleneckCSP",
    "models.common.BottleneckCSP2", "models.common.SPPCSP", "models.common.Concat",
    "mish_cuda.MishCuda", "utils.activations.Mish",
    "torch.nn.modules.conv.Conv2d", "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.upsampling.Upsample",
    "torch.nn.modules.linear.Identity", "torch.nn.modules.activation.Mish",
    "torch.nn.modules.activation.LeakyReLU",
})


class Refused(Exception):
    """A global outside the allow-list, or an opcode aimed at one: `it would ACTION NAME` for the user."""

    def __init__(self, name: str, action: str = "import") -> None:
        super().__init__(name)
        self.action = action


class StandIn:
    """An inert object in place of an official class: it records the class name and its pickled state.

    Its only attribute is `state`, a fresh dict of what the file's BUILD gave (a module's `__dict__`):
    nothing is set as an attribute, so a file cannot shadow a method or reach another object.
    """

    __slots__ = ("state",)
    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def build(self, state: Any) -> "StandIn":
        """BUILD: keep the (dict state, slot state) pair as one dict of string keys."""
        if isinstance(state, tuple) and len(state) == 2:
            parts = [part for part in state if part is not None]
            if any(not isinstance(part, dict) for part in parts):
                raise ValueError(f"malformed state for {self.qualname}")
            state = {k: v for part in parts for k, v in part.items()}
        if not isinstance(state, dict) or any(not isinstance(k, str) for k in state):
            raise ValueError(f"malformed state for {self.qualname}")
        self.state = dict(state)
        return self

    def __repr__(self) -> str:
        return f"<stand-in {self.qualname}>"


_STANDIN_TYPES: dict[str, type] = {}


def standin_class(qualname: str) -> type:
    """The (cached, stateless) stand-in type for an allowed class name; BUILD never reaches a type."""
    if qualname not in _STANDIN_TYPES:
        _STANDIN_TYPES[qualname] = type(qualname.rsplit(".", 1)[-1], (StandIn,), {"qualname": qualname,
                                                                                   "__slots__": ()})
    return _STANDIN_TYPES[qualname]


@dataclass(frozen=True)
class Marker:
    """A global that may only appear as an argument (numpy's `ndarray` given to `_reconstruct`)."""

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise Refused(f"{self.name} (called directly; only numpy's own pickle form of numeric arrays is read)")
