"""Weights in and out: darknet cfg/weights, official Scaled-YOLOv4 .pt (restricted unpickler), ONNX/TorchScript.

`loading.load_model` is the one entry point that reads weights files; `convert` holds the
`scaledyolo convert` / `scaledyolo export` commands.
"""
