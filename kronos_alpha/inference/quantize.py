"""Opt-in int8 weights for CPU inference: ``quantize_int8(model)`` returns a quantised copy.

What is quantised: every ``nn.Linear`` of the Kronos predictor - the attention and SwiGLU
projections of each block, the token fusion, the dependency layer's projections and the
two heads. Each weight matrix is stored as int8 with one float32 scale per output row
(symmetric, ``max |w| / 127``); biases stay float32. A product quantises its input on the
fly (one uint8 scale and zero point per call, 7-bit range so that the AVX2 kernels cannot
saturate) and runs torch's fbgemm int8 kernel (``torch.ops.quantized.linear_dynamic``).

What stays float32: the token and time embeddings (table look-ups, no products to speed
up), the RMS norms, the rotary tables, attention over the key/value cache (it reads
activations, not weights) and the whole tokenizer (its decoder turns tokens back into
prices: error there moves every forecast, and it is a small share of the time).

Why: a one-token generation step is bound by reading the weights (about 94 MB in float32
for Kronos-small), and int8 reads a quarter of them (24 MB for Kronos-small, which fits
the 32 MB L3 cache of this project's CPU; 97 MB for Kronos-base). The kernel was chosen by
timing the 37 products of one Kronos-small step at 1 thread on that CPU, an AMD EPYC with
AVX2 and no AVX-512 VNNI (one-off timings, unloaded box): float32 5.8 ms, this kernel
2.1 ms, onednn's 7.0 ms, ``torch._weight_int8pack_mm`` (weight-only int8) 22 ms, and
``torch._int_mm`` 15x slower than float32 on a single 512 x 1536 product (torchao, not
installed here, was not tried). End-to-end figures: benchmarks/generation.py --int8.

How the engine sees it: each quantised layer's ``weight`` is an :class:`Int8Weight`, a
tensor subclass that looks like the float32 (out, in) matrix and routes ``F.linear``
through the int8 kernel; the stacking and re-layout the generation engine applies
(``torch.cat`` along rows, ``t``/``contiguous``, and the per-thread ``view``/
``transpose``/``bmm`` blocks) stay int8. Any other operation on it sees the dequantised
float32 matrix, so it stays correct, only not faster. The weights are read-only: an int8
model is for inference, not for training.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_map

__all__ = ["Int8Linear", "Int8Weight", "is_int8", "quantize_int8"]


_SCRIPTED: list = []


def _linear_dynamic(x: torch.Tensor, packed) -> torch.Tensor:
    """``quantized::linear_dynamic`` with 7-bit activations, called from TorchScript: from
    Python each call pays about 20 us converting the packed-weights object, from a
    scripted function 5 us (measured here), and a step makes about 40 of them."""
    if not _SCRIPTED:

        def call(x: torch.Tensor, packed: torch.classes.quantized.LinearPackedParamsBase):
            return torch.ops.quantized.linear_dynamic(x, packed, True)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.script is deprecated from 2.10
                _SCRIPTED.append(torch.jit.script(call))
        except Exception:  # a torch without TorchScript: the plain (slower) call
            _SCRIPTED.append(call)
    return _SCRIPTED[0](x, packed)


def _quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (int8 (out, in), float32 scales (out,))."""
    w = w.detach().float()
    scale = (w.abs().amax(1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def _prepack(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    zeros = torch.zeros(q.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantized-tensor deprecation notice
        qt = torch._make_per_channel_quantized_tensor(q, scale.double(), zeros, 0)
        return torch.ops.quantized.linear_prepack(qt, bias)


class Int8Weight(torch.Tensor):
    """A float32 (out, in) weight held as int8 rows and their scales (see the module doc).

    ``recipe``: the views taken of the matrix since it was quantised (``t``, ``view``,
    ``transpose``), replayed on the dequantised matrix when an operation needs floats.
    """

    @staticmethod
    def __new__(cls, q, scale, shape=None, recipe=()):
        shape = tuple(q.shape) if shape is None else tuple(shape)
        return torch.Tensor._make_wrapper_subclass(
            cls, shape, dtype=torch.float32, device=q.device, requires_grad=False
        )

    def __init__(self, q, scale, shape=None, recipe=()):
        self.q, self.scale, self.recipe = q, scale, tuple(recipe)
        self._ndim = len(q.shape if shape is None else shape)
        self._pack = self._bias = self._key = None  # the last packing
        self._whole = None  # blocks: the whole (out, in) matrix, packed once

    def __repr__(self) -> str:
        return (
            f"Int8Weight(shape={tuple(self.shape)}, rows={self.q.shape[0]}, recipe={self.recipe})"
        )

    def __reduce_ex__(self, protocol):
        return (Int8Weight, (self.q, self.scale, tuple(self.shape), self.recipe))

    def __deepcopy__(self, memo):
        return Int8Weight(self.q.clone(), self.scale.clone(), self.shape, self.recipe)

    def dequantize(self) -> torch.Tensor:
        """The float32 tensor this one stands for."""
        w = self.q.float() * self.scale[:, None]
        for op, *a in self.recipe:
            w = getattr(w, op)(*a)
        return w

    def _derived(self, shape, step) -> Int8Weight:
        recipe = list(self.recipe)
        if step == ("t",) and recipe and recipe[-1] == ("t",):
            recipe.pop()  # t().t() is the matrix itself
        else:
            recipe.append(step)
        return Int8Weight(self.q, self.scale, shape, recipe)

    def packed(self, bias: torch.Tensor | None):
        """fbgemm's packed weights with ``bias`` folded in (None: that bias cannot be).

        The last packing is kept, keyed by the bias's storage, size and version, so a fresh
        view of the same bias (the engine's per-thread blocks take one per call) reuses it;
        holding the bias keeps its address its own.
        """
        key = None
        if bias is not None:
            version = None if bias.is_inference() else bias._version
            key = (bias.data_ptr(), bias.numel(), version)
        if self._pack is not None and key == self._key:
            return self._pack
        if self.q.device.type != "cpu":
            raise RuntimeError(f"int8 weights run on the CPU only; these are on {self.q.device}")
        if bias is not None and (bias.dtype != torch.float32 or bias.numel() != self.q.shape[0]):
            return None
        b = None if bias is None else bias.detach().reshape(-1).contiguous()
        self._pack = _prepack(self.q, self.scale, b)
        self._bias, self._key = bias, key
        return self._pack

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is F.linear and not kwargs:  # the hot path: every product of a step
            out = _int8_linear(*args)
        else:
            handler = _HANDLERS.get(func)
            out = NotImplemented if handler is None else handler(*args, **(kwargs or {}))
        if out is not NotImplemented:
            return out
        with torch._C.DisableTorchFunctionSubclass():  # metadata; data ops: __torch_dispatch__
            return func(*args, **(kwargs or {}))

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        def plain(t):
            return t.dequantize() if isinstance(t, Int8Weight) else t

        return func(*tree_map(plain, args), **tree_map(plain, kwargs or {}))


def _int8_linear(x, w, bias=None):
    """F.linear(x, w, bias) through the int8 kernel when w is a plain (out, in) Int8Weight."""
    if type(w) is not Int8Weight or w.recipe or type(x) is Int8Weight:
        return NotImplemented
    if x.dtype != torch.float32 or not x.is_cpu:
        return NotImplemented
    pack = w.packed(bias)
    return NotImplemented if pack is None else _linear_dynamic(x, pack)


def _cat(tensors, dim=0, **kwargs):
    """Row stacking of plain Int8Weights stays int8 (q|k|v, w1|w3 in the engine)."""
    ok = all(isinstance(t, Int8Weight) and not t.recipe for t in tensors)
    if not ok or dim not in (0, -2) or kwargs:
        return NotImplemented
    return Int8Weight(torch.cat([t.q for t in tensors]), torch.cat([t.scale for t in tensors]))


def _t(w):
    return w._derived((w.shape[1], w.shape[0]), ("t",)) if w.dim() == 2 else NotImplemented


def _contiguous(w, memory_format=torch.contiguous_format):
    return w  # a layout request: the packed weights are fbgemm's own layout


def _view(w, *shape):
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    if w.recipe or len(shape) != 3 or -1 in shape or shape[1] * shape[0] != w.shape[0]:
        return NotImplemented
    return w._derived(shape, ("view", *shape))  # (parts, out / parts, in) blocks


def _transpose(w, d0, d1):
    blocks = len(w.recipe) == 1 and w.recipe[0][0] == "view"
    if not blocks or sorted((d0 % 3, d1 % 3)) != [1, 2]:
        return NotImplemented
    p, o, i = w.shape
    return w._derived((p, i, o), ("transpose", 1, 2))


def _blocks_product(xs, w, bias=None):
    """bmm over (parts, in, out / parts) blocks of one matrix with one row block expanded
    over the parts (the engine's per-thread product): one int8 product, split back."""
    if not isinstance(w, Int8Weight) or [r[0] for r in w.recipe] != ["view", "transpose"]:
        return NotImplemented
    if isinstance(xs, Int8Weight) or xs.dim() != 3 or (xs.shape[0] > 1 and xs.stride(0) != 0):
        return NotImplemented  # not one block of rows expanded over the parts
    p, _, o = w.shape
    flat = None if bias is None else bias.reshape(-1)
    if w._whole is None:
        w._whole = Int8Weight(w.q, w.scale)
    y = _int8_linear(xs[0], w._whole, flat)
    if y is NotImplemented:
        return y
    return y.view(xs.shape[1], p, o).transpose(0, 1)


def _bmm(xs, w):
    return _blocks_product(xs, w)


def _baddbmm(b, xs, w, *, beta=1, alpha=1):
    if beta != 1 or alpha != 1 or isinstance(b, Int8Weight) or b.dim() != 3 or b.shape[1] != 1:
        return NotImplemented
    return _blocks_product(xs, w, b)


def _to(w, *args, **kwargs):
    """Moving to another device or dtype would leave the int8 kernel behind: refuse."""
    target = torch._C._nn._parse_to(*args, **kwargs)
    device, dtype = target[0], target[1]
    if (device is None or torch.device(device).type == "cpu") and dtype in (None, torch.float32):
        return w
    raise RuntimeError(
        f"int8 weights stay on the CPU in float32 (asked for device={device}, dtype={dtype})"
    )


_HANDLERS = {
    F.linear: _int8_linear,
    torch.Tensor.dim: lambda w: w._ndim,
    torch.cat: _cat,
    torch.concat: _cat,
    torch.Tensor.t: _t,
    torch.Tensor.contiguous: _contiguous,
    torch.Tensor.view: _view,
    torch.Tensor.transpose: _transpose,
    torch.bmm: _bmm,
    torch.baddbmm: _baddbmm,
    torch.Tensor.to: _to,
}


class Int8Linear(nn.Module):
    """nn.Linear with int8 weights: buffers ``qweight`` (int8) and ``scale``, a float32
    ``bias``; ``weight`` is the matching :class:`Int8Weight` (in state_dict only as those
    buffers, so weights digests tell int8 from float32)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self._weight = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        new = cls(linear.in_features, linear.out_features, linear.bias is not None)
        new.qweight, new.scale = _quantize_rows(linear.weight)
        if linear.bias is not None:
            new.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        return new

    @property
    def weight(self) -> Int8Weight:
        key = tuple((t.data_ptr(), t._version, t.device) for t in (self.qweight, self.scale))
        if self._weight is None or self._weight[0] != key:
            self._weight = (key, Int8Weight(self.qweight, self.scale))
        return self._weight[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def __getstate__(self) -> dict:
        state = super().__getstate__().copy()
        state["_weight"] = None  # rebuilt from the buffers
        return state

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` has int8 layers (from ``quantize_int8``)."""
    return any(isinstance(m, Int8Linear) for m in model.modules())


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every nn.Linear replaced by :class:`Int8Linear` (see the
    module doc), in eval mode; ``model`` itself is not changed. The model must be float32
    on the CPU: the int8 kernels are CPU kernels, and float32 is what they read and write."""
    for p in model.parameters():
        if p.device.type != "cpu" or p.dtype != torch.float32:
            raise ValueError(
                f"int8 quantisation takes a float32 model on the CPU; this one has "
                f"{p.dtype} parameters on {p.device}"
            )
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise RuntimeError("int8 mode needs torch's fbgemm kernels, missing from this build")
    new = copy.deepcopy(model).eval()
    for module in list(new.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:  # not subclasses: their forward may differ
                setattr(module, name, Int8Linear.from_linear(child))
    return new.requires_grad_(False)
