"""Our network run by OpenVINO's CPU plugin: the runner behind `--precision int8` in predict, val and bench.

`OpenVINONetwork` wraps an OpenVINO graph of OUR network (`interop.openvino.to_openvino`, usually
quantised by `interop.quantize.quantize_int8`) whose one output is the decoded `(B, N, 5 + nc)` float
tensor, exactly what `InferenceModel.forward` returns. It is called like a model on float `(B, 3, H, W)`
0-1 batches and carries what `Predictor`, `validate` and test-time augmentation read from a model
(`names`, `spec`, `strides`, `num_classes`, `training`, `device`, `dtype`). It is not an `nn.Module`: it
has no torch parameters and cannot be trained, so `eval()`/`train()` only keep the calling code's
mode switches working.

Any input shape runs (predict's rectangular letterbox, batches of 8, TTA's rescaled inputs): each of
the first `MAX_STATIC_SHAPES` input shapes gets a graph compiled for exactly that shape (about 0.6 s
for yolov4-tiny), later shapes share one graph reshaped to free batch, height and width. A static
graph is the faster one: the int8 yolov4-tiny at 416 ran about 20 ms per picture static and about
25 ms dynamic (Intel Xeon, 2 cores, shared with other work: a rough figure, not a benchmark).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from scaledyolo.errors import UserError
from scaledyolo.interop.openvino import COMPILE_F32, ov

if TYPE_CHECKING:
    from scaledyolo.models.spec import ModelSpec

DYNAMIC_INPUT = [-1, 3, -1, -1]  # batch, channels, height, width
MAX_STATIC_SHAPES = 6  # each compiled shape holds its own copy of the weights


class OpenVINONetwork:
    """A compiled OpenVINO graph of our network on the CPU: `(B, 3, H, W)` float 0-1 -> `(B, N, 5 + nc)` float32.

    `graph` must come from a dynamic-shape export (`to_openvino(..., dynamic=True)`: its box grids are
    computed from the input's size, not constants of one size). `names`, `spec` and `strides` are the
    source model's. `config` adds OpenVINO compile options to
    `INFERENCE_NUM_THREADS` (torch's thread count); the default `COMPILE_F32` keeps every operation
    that is not quantised (box decoding above all) in float32 on CPUs whose default is bf16.
    """

    training = False
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, graph: "ov.Model", names: list[str], spec: "ModelSpec", strides: list[int],
                 config: dict[str, Any] | None = None) -> None:
        if len(graph.outputs) != 1:
            raise UserError(f"an OpenVINO network of our model has one output (the decoded boxes), this graph "
                            f"has {len(graph.outputs)}")
        self.graph = graph
        self.options = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), **(COMPILE_F32 if config is None else config)}
        self.core = ov.Core()
        self.requests: dict[tuple[int, ...] | None, Any] = {}  # input shape (None: the dynamic graph) -> infer request
        self.names = list(names)
        self.spec = spec
        self.strides = list(strides)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The decoded detections of the batch `x` (float, 0-1, on the CPU), as a float32 CPU tensor."""
        if x.device.type != "cpu":
            raise UserError("the OpenVINO network runs on the CPU; its input must be a CPU tensor")
        blob = np.ascontiguousarray(x.detach().float().numpy())
        out = self._request(blob.shape).infer({0: blob})
        return torch.from_numpy(np.array(next(iter(out.values())), dtype=np.float32))

    def _request(self, shape: tuple[int, ...]) -> Any:
        """The infer request for inputs of `shape`: its own static graph while there are few, else the dynamic one."""
        key = shape if shape in self.requests or len(self.requests) < MAX_STATIC_SHAPES else None
        if key not in self.requests:
            graph = self.graph.clone()
            graph.reshape(list(shape) if key is not None else DYNAMIC_INPUT)
            self.requests[key] = self.core.compile_model(graph, "CPU", self.options).create_infer_request()
        return self.requests[key]

    def eval(self) -> "OpenVINONetwork":
        """No-op (it is always in inference mode); returns self, as `nn.Module.eval` does."""
        return self

    def train(self, mode: bool = True) -> "OpenVINONetwork":
        """No-op: a compiled OpenVINO graph is not trained; `training` stays False. Returns self."""
        return self

    def __repr__(self) -> str:
        return f"OpenVINONetwork({self.spec.name}, {self.num_classes} classes, OpenVINO {ov.__version__} CPU)"
