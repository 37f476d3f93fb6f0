"""Darknet `.cfg` / `.weights` in and out.

- `cfg`: cfg text -> sections, every integer option range-checked;
- `layout`: the table cfg layer -> module of our model, derived from the named blocks of tiny / csp;
- `weights`: `.weights` header, reading (length checked first) and writing;
- `writer`: model -> cfg text; `reader` + `graph`: the generic runner for cfgs that are no member;
- `build`: cfg -> spec / model, model -> cfg + weights files.

Importing this package registers the `darknet` architecture (the generic runner) with the models.
"""

from scaledyolo.interop.darknet.build import build_darknet, export_darknet, model_from_cfg, spec_from_cfg
from scaledyolo.interop.darknet.cfg import Section, parse_cfg
from scaledyolo.interop.darknet.layout import conv_modules, darknet_layout, yolo_layer_indices
from scaledyolo.interop.darknet.weights import (
    check_weights_length, expected_weights_bytes, load_weights, read_weights_header, save_weights, weights_bytes,
)
from scaledyolo.interop.darknet.writer import cfg_text
from scaledyolo.models.architectures import register_architecture

register_architecture("darknet", build_darknet)

__all__ = ["Section", "build_darknet", "cfg_text", "check_weights_length", "conv_modules", "darknet_layout",
           "expected_weights_bytes", "export_darknet", "load_weights", "model_from_cfg", "parse_cfg",
           "read_weights_header", "save_weights", "spec_from_cfg", "weights_bytes", "yolo_layer_indices"]
