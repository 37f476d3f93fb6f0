"""The fast inference path: the same function as the eval-mode model, rebuilt for speed.

`prepare_for_inference(model, ...)` returns an `InferenceModel` whose output equals
`model.eval()(x)` (to float rounding); `scaledyolo predict` and `scaledyolo bench` run it by default.
What it does, and why each step pays on a CPU (measured in `benchmarks/README.md`):

- every BatchNorm is folded (`scaledyolo.models.fusion.fold_batchnorms`, the same folding ONNX
  export uses): into the convolution before it, and in the large members' CSP blocks the BN shared
  by the two concatenated halves backwards into the plain convolution that produces each half;
  only the half that comes out of an activation keeps a per-channel affine;
- activations are channels_last (NHWC), the layout oneDNN's fastest convolutions read and write;
- on x86 with oneDNN, each convolution's weights are reordered once into oneDNN's blocked layout
  ("pre-packed"), instead of on every call, and leaky/ReLU/SiLU/sigmoid are fused into the
  convolution as oneDNN post-ops;
- Mish, which PyTorch computes with tanh and softplus at a fraction of memory speed, takes three
  passes (one sigmoid, two cheap) on the negated output of its convolution, chunk by chunk within
  the L2 cache (`negated_mish`): 3-4x faster than the five passes it replaced on large maps;
- freed activation memory stays in the process for the next call (glibc's `mallopt`, Linux only):
  by default glibc gives every large block back to the OS on free, and the kernel then zero-fills
  fresh pages for each activation of every call, 20% of the CPU time of yolov4-csp at 512;
- optionally (`compile=True`) the whole graph goes through torch.compile with inductor's weight
  freezing, which fuses the element-wise work into single passes (needs a C++ compiler; the first
  call compiles, which takes tens of seconds, so it is not the default).

Reduced precision (`precision="bf16"`) runs the network in bfloat16 (AVX512-BF16 doubles the
convolution throughput) and decodes the boxes in float32; it is never the default (see DESIGN.md).
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import sys
import weakref
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaledyolo.devices import PRECISIONS, check_precision
from scaledyolo.errors import RunError
from scaledyolo.models.blocks import SPPCSP, BottleneckCSP, BottleneckCSP2, CSPOSAStage
from scaledyolo.models.fusion import ChannelAffine, fold_batchnorms
from scaledyolo.models.layers import Conv
from scaledyolo.models.yolo import YOLO



MISH_CHUNK = 1 << 16  # elements: 256 KiB of float32, so the three passes over a chunk stay in L2
_ONE = torch.ones(())  # the 1 of 1 + r^2 (addcmul's input; a 0-dim tensor takes the activation's dtype)


def _mish_in_place(z: torch.Tensor) -> None:
    """`z <- mish(-z)` in three passes: ``r = sigmoid(z)``, ``r <- 1 + r^2``, ``z <- z - 2 z / r``."""
    r = torch.sigmoid(z)
    torch.addcmul(_ONE, r, r, out=r)
    z.addcdiv_(z, r, value=-2)


def negated_mish(z: torch.Tensor) -> torch.Tensor:
    """Mish of ``y = -z``, overwriting `z` (a fresh activation the caller owns) and returning it.

    The convolution before it is built with negated weights and bias, so it hands over ``z = -y``
    for free. With ``r = sigmoid(z) = 1 / (1 + e^y)``, ``tanh(softplus(y)) = ((1 + e^y)^2 - 1) /
    ((1 + e^y)^2 + 1) = (1 - r^2) / (1 + r^2)``, so ``mish(y) = y (1 - r^2) / (1 + r^2) = z - 2 z /
    (1 + r^2)``: one sigmoid and two cheap passes (PyTorch's own Mish evaluates tanh and softplus,
    several times slower), with no overflow (r stays in 0-1). A large activation is done in chunks
    that fit the core's L2 cache, so only the first pass reads main memory.
    """
    if torch.compiler.is_compiling():  # inductor fuses the three passes into one loop itself
        _mish_in_place(z)
        return z
    if z.is_contiguous():
        flat = z.view(-1)
    elif z.is_contiguous(memory_format=torch.channels_last):
        flat = z.permute(0, 2, 3, 1).view(-1)
    else:
        _mish_in_place(z)
        return z
    for chunk in flat.split(MISH_CHUNK):
        _mish_in_place(chunk)
    return z


def _post_op(act: nn.Module) -> tuple[str, list[float]]:
    """The oneDNN post-op (name, scalars) computing `act`, or ('none', []) when it has none."""
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", [float(act.negative_slope)]
    if isinstance(act, nn.ReLU):
        return "relu", []
    if isinstance(act, nn.SiLU):
        return "swish", []
    if isinstance(act, nn.Sigmoid):
        return "sigmoid", []
    return "none", []


_MEMORY_KEPT = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks for reuse instead of unmapping them (once per process).

    Without it each layer's output is a fresh mmap, page-faulted and zero-filled by the kernel on
    every call. The process keeps its peak activation memory (what a caching allocator does).
    Returns whether the setting is in effect (False off Linux/glibc).
    """
    global _MEMORY_KEPT
    if _MEMORY_KEPT or not sys.platform.startswith("linux"):
        return _MEMORY_KEPT
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold, limit = -1, -3, 1 << 30
        _MEMORY_KEPT = bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, limit))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        _MEMORY_KEPT = False
    return _MEMORY_KEPT


def _onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FastConv(nn.Module):
    """Convolution (BN already folded) + activation, with pre-packed oneDNN weights when `packed`."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module, dtype: torch.dtype, packed: bool,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.mish = isinstance(act, nn.Mish)
        self.attr, self.scalars = _post_op(act)
        sign = -1.0 if self.mish else 1.0  # a Mish convolution outputs -y for `negated_mish`
        weight = conv.weight.detach().to(dtype) * sign
        self.bias = (nn.Parameter(conv.bias.detach().to(dtype) * sign, requires_grad=False)
                     if conv.bias is not None else None)
        self.packed = False
        if packed:
            shape = list(input_shape) if input_shape is not None else [1, conv.in_channels, 64, 64]
            try:  # a oneDNN-layout tensor cannot be a Parameter; it is derived data, kept as a plain attribute
                self.weight = torch.ops.mkldnn._reorder_convolution_weight(
                    weight, self.padding, self.stride, self.dilation, self.groups, shape)
                self.packed = True
            except RuntimeError:  # this CPU's oneDNN cannot run the dtype (e.g. bf16 without AVX-512): plain conv
                pass
        if not self.packed:
            self.weight = nn.Parameter(weight, requires_grad=False)
        self.act = nn.Identity() if self.mish or (self.packed and self.attr != "none") else act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed:
            y = torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                self.attr, self.scalars, None)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        y = self.act(y)
        return negated_mish(y) if self.mish else y


class _FastCSP(nn.Module):
    """BottleneckCSP (its post-concat BN already folded into `cv3` and `cv2`) with Mish applied per half."""

    def __init__(self, block: BottleneckCSP, make: "_Maker") -> None:
        super().__init__()
        self.cv1, self.m, self.cv4 = make(block.cv1), make(block.m), make(block.cv4)
        self.cv3 = make.conv(block.cv3, block.act)
        self.cv2 = make.conv(block.cv2, block.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv4(torch.cat((self.cv3(self.m(self.cv1(x))), self.cv2(x)), 1))


class _FastCSP2(nn.Module):
    """BottleneckCSP2 / SPPCSP tail: the bypass half's BN is folded, the main half keeps an affine."""

    def __init__(self, head: nn.Module, main: nn.Module, bypass: nn.Conv2d, affine: ChannelAffine, act: nn.Module,
                 out: nn.Module, make: "_Maker", bypass_from_input: bool) -> None:
        super().__init__()
        first = affine.scale.numel() - bypass.out_channels
        self.head, self.main, self.out = make(head), make(main), make(out)
        like = torch.empty(0, dtype=make.dtype, device=affine.scale.device)
        self.mish = isinstance(act, nn.Mish)
        sign = -1.0 if self.mish else 1.0  # -y for `negated_mish`
        self.affine = ChannelAffine(affine.scale.flatten()[:first] * sign, affine.shift.flatten()[:first] * sign, like)
        self.act = copy.deepcopy(act)
        self.bypass = make.conv(bypass, act)
        self.bypass_from_input = bypass_from_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.head(x)
        main = self.affine(self.main(x1))
        main = negated_mish(main) if self.mish else self.act(main)
        bypass = self.bypass(x if self.bypass_from_input else x1)
        return self.out(torch.cat((main, bypass), 1))


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """`F.max_pool2d(x, 2, 2)`, bit for bit, as three element-wise maxima of strided views: half the
    time of PyTorch's CPU pooling, which also computes the indices nobody reads here."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
    return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]), out=top)


class _FastCSPOSA(nn.Module):
    """CSPOSAStage with its 2x2 max pool taken before the final concatenation (pooling is per channel,
    so ``pool(cat(a, b)) = cat(pool(a), pool(b))``): the concatenation copies a quarter of the data."""

    def __init__(self, stage: CSPOSAStage, make: "_Maker") -> None:
        super().__init__()
        self.first, self.conv1, self.conv2 = make(stage.first), make(stage.conv1), make(stage.conv2)
        self.transition = make(stage.transition)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.first(x)
        y1 = self.conv1(x[:, x.shape[1] // 2:])
        partial = self.transition(torch.cat((self.conv2(y1), y1), 1))
        return torch.cat((max_pool_2x2(x), max_pool_2x2(partial)), 1), partial


class _SPP(nn.Module):
    """The SPPCSP main branch up to (and including) cv6."""

    def __init__(self, block: SPPCSP, make: "_Maker") -> None:
        super().__init__()
        self.cv1, self.cv3, self.cv4 = make(block.cv1), make(block.cv3), make(block.cv4)
        self.m = block.m
        self.cv5, self.cv6 = make(block.cv5), make(block.cv6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        return self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))


class _Maker:
    """Turns modules of a fused model into their fast versions (recursively)."""

    def __init__(self, dtype: torch.dtype, packed: bool, shapes: dict[int, torch.Size]) -> None:
        self.dtype, self.packed, self.shapes = dtype, packed, shapes

    def conv(self, conv: nn.Conv2d, act: nn.Module) -> FastConv:
        return FastConv(conv, act, self.dtype, self.packed, self.shapes.get(id(conv)))

    def __call__(self, module: nn.Module) -> nn.Module:
        """`module` comes from a model whose batch norms are folded (`fold_batchnorms`)."""
        if isinstance(module, Conv):
            return self.conv(module.conv, module.act)
        if isinstance(module, CSPOSAStage):
            return _FastCSPOSA(module, self)
        if isinstance(module, BottleneckCSP):
            return _FastCSP(module, self)
        if isinstance(module, BottleneckCSP2):
            return _FastCSP2(module.cv1, module.m, module.cv2, module.bn, module.act, module.cv3, self, False)
        if isinstance(module, SPPCSP):
            return _FastCSP2(nn.Identity(), _SPP(module, self), module.cv2, module.bn, module.act, module.cv7,
                             self, True)
        if isinstance(module, nn.Conv2d):
            return self.conv(module, nn.Identity())
        for name, child in module.named_children():
            setattr(module, name, self(child))
        return module


def _conv_input_shapes(model: YOLO, img_size: int | tuple[int, int]) -> dict[int, torch.Size]:
    """The input shape of every convolution at `img_size`, by id (oneDNN picks its weight layout by shape).

    Measured by a forward pass at twice the largest stride, then scaled: every spatial size in the
    network is the input size divided by a power of two, so this is exact and costs almost nothing.
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    small = 2 * model.spec.max_stride
    shapes: dict[int, torch.Size] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        _, c, sh, sw = inputs[0].shape
        shapes[id(module)] = torch.Size((1, c, max(1, sh * h // small), max(1, sw * w // small)))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, small, small))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


class _Network(nn.Module):
    """The network up to the raw maps (float32): the unit handed to torch.compile."""

    def __init__(self, model: YOLO) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        model = self.model
        return [m.float() for m in model.detect.raw(model.features(x), model.levels)]


class InferenceModel(nn.Module):
    """Eval-mode forward of a YOLO, fast: `(B, 3, H, W)` float in 0-1 -> `(B, N, 5 + nc)` float32.

    Metadata (`names`, `spec`, `strides`, `num_classes`) is that of the wrapped model.
    """

    def __init__(self, model: YOLO, dtype: torch.dtype, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.network: nn.Module = _Network(model)
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.names = model.names
        self.spec = model.spec

    @property
    def strides(self) -> list[int]:
        return self.model.strides

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(self.dtype).contiguous(memory_format=self.memory_format)
            return self.model.detect.decode(self.network(x), self.model.levels)


def prepare_for_inference(model: YOLO, device: str | torch.device = "cpu", precision: str = "fp32",
                          img_size: int | tuple[int, int] | None = None, compile: bool = False,
                          channels_last: bool = True, reuse_memory: bool = True) -> InferenceModel:
    """A fast, eval-only copy of `model` (the original is left untouched); call it on image batches.

    `img_size` is the size the model will mostly see (default: the member's native size); it picks
    oneDNN's weight layout and, with `compile`, the size compiled for; other sizes still work.
    `precision`: "fp32" (exact, the default), "bf16" (CPU/GPU) or "fp16" (GPU only).
    `reuse_memory`: on the CPU, call `keep_freed_memory()` (process-wide; see there).
    """
    device = torch.device(device)
    dtype = PRECISIONS[check_precision(precision, device)]
    img_size = img_size or model.spec.img_size
    if device.type == "cpu" and reuse_memory:
        keep_freed_memory()
    fast = fold_batchnorms(copy.deepcopy(model).cpu().float().eval())
    for p in fast.parameters():
        p.requires_grad_(False)
    packed = device.type == "cpu" and not compile and channels_last and _onednn_available()
    maker = _Maker(dtype, packed, _conv_input_shapes(fast, img_size) if packed else {})
    fast.backbone, fast.neck, fast.head = maker(fast.backbone), maker(fast.neck), maker(fast.head)
    if not packed:
        fast = fast.to(device=device, dtype=dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    fast.detect.anchors = fast.detect.anchors.float()
    wrapper = InferenceModel(fast, dtype, channels_last)
    if compile:
        _compile(wrapper, device, img_size)
    return wrapper


_CACHE: "weakref.WeakKeyDictionary[YOLO, tuple[tuple, InferenceModel]]" = weakref.WeakKeyDictionary()


def _weights_key(model: YOLO) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place (optimizer steps,
    load_state_dict, BN statistics updates), so a cached fast copy is never stale."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


def cached_inference_model(model: YOLO, device: str | torch.device = "cpu",
                           img_size: int | tuple[int, int] | None = None) -> InferenceModel:
    """`prepare_for_inference(model, device, img_size=...)` (fp32), reused while the weights are unchanged.

    `model.predict` calls this, so repeated calls pay the one-off preparation once.
    """
    key = (str(torch.device(device)), img_size, _weights_key(model))
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    fast = prepare_for_inference(model, device=device, img_size=img_size)
    _CACHE[model] = (key, fast)
    return fast


def _compile(wrapper: InferenceModel, device: torch.device, img_size: int | tuple[int, int]) -> None:
    """torch.compile the network with inductor's weight freezing, compiling now at `img_size`."""
    import torch._inductor.config as inductor_config  # heavy, and only --compile needs it


    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    compiled = torch.compile(wrapper.network, dynamic=False)
    try:
        with inductor_config.patch(freezing=True), torch.inference_mode():
            compiled(torch.zeros(1, 3, h, w, dtype=wrapper.dtype, device=device).contiguous(
                memory_format=wrapper.memory_format))
    except Exception as exc:  # inductor raises many types (no C++ compiler, unsupported op, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RunError(f"torch.compile failed (run without --compile for the default fast path): {first}") from exc
    wrapper.network = compiled
