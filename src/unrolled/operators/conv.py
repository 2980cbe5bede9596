"""Multi-channel, strided 2-D convolutions as operators."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import torch
import torch.nn.functional as F

from .._validate import positive_int, to_tensor
from .base import Operator, hash_key


def as_kernel(kernel, *, dtype=None, device=None) -> torch.Tensor:
    """``kernel`` as a (C_out, C_in, kh, kw) tensor; a 2-D (kh, kw) kernel is one channel in, one out."""
    k = to_tensor(kernel, "kernel", dtype=dtype, device=device)
    if k.dim() == 2:
        k = k[None, None]
    if k.dim() != 4 or 0 in k.shape:
        raise ValueError(f"kernel must be (kh, kw) or (C_out, C_in, kh, kw), got shape {tuple(k.shape)}")
    return k


def flipped(kernel: torch.Tensor) -> torch.Tensor:
    """The conv2d weight of a convolution kernel: conv2d correlates, so flip the spatial axes."""
    return kernel.flip(-2, -1)


def _pair(value, name: str, *, minimum: int) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, Integral) or v < minimum for v in pair):
        raise ValueError(f"{name} must be an integer ≥ {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class ConvGeometry:
    """Shapes of y = S(k ∗ x) for one image x of ``in_shape`` (C_in, H, W) and a kernel (C_out, C_in, kh, kw).

    ``output_padding`` makes the transposed convolution land exactly on (H, W) whatever
    the stride: with H + 2p − kh = (H′ − 1)s + r, 0 ≤ r < s, it is r.
    """

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]

    @classmethod
    def of(cls, kernel_shape, image_shape, stride, padding) -> ConvGeometry:
        c_out, c_in, kh, kw = kernel_shape
        if not isinstance(image_shape, (tuple, list)) or len(image_shape) not in (2, 3):
            raise ValueError(f"image_shape must be (H, W) or (C_in, H, W), got {image_shape!r}")
        dims = tuple(positive_int(s, "image_shape") for s in image_shape)
        if len(dims) == 3 and dims[0] != c_in:
            raise ValueError(f"image_shape has {dims[0]} channels but the kernel takes C_in={c_in}")
        H, W = dims[-2:]
        stride = _pair(stride, "stride", minimum=1)
        padding = _pair(kh // 2 if padding is None else padding, "padding", minimum=0)
        out_hw, extra = [], []
        for size, k, s, p in zip((H, W), (kh, kw), stride, padding):
            out, r = divmod(size + 2 * p - k, s)
            if out < 0:
                raise ValueError(f"kernel {(kh, kw)} is larger than the padded image {(H, W)} (padding {padding})")
            out_hw.append(out + 1)
            extra.append(r)
        return cls((c_in, H, W), (c_out, *out_hw), stride, padding, tuple(extra))

    def config(self) -> dict:
        return {"image_shape": list(self.in_shape), "stride": list(self.stride), "padding": list(self.padding)}

    def forward(self, X: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Rows x (batch, C_in·H·W) ↦ rows S(k ∗ x) (batch, C_out·H′·W′); ``weight`` is the flipped kernel."""
        out = F.conv2d(X.reshape(X.shape[0], *self.in_shape), weight, stride=self.stride, padding=self.padding)
        return out.reshape(X.shape[0], -1)

    def adjoint(self, R: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Rows r (batch, C_out·H′·W′) ↦ rows (S(k ∗ ·))ᵀ r (batch, C_in·H·W), a transposed convolution."""
        out = F.conv_transpose2d(
            R.reshape(R.shape[0], *self.out_shape),
            weight,
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
        )
        return out.reshape(R.shape[0], -1)


def conv_fingerprint(kernel: torch.Tensor, geometry: ConvGeometry) -> str:
    return hash_key("conv2d", kernel, (tuple(kernel.shape), geometry.in_shape, geometry.stride, geometry.padding))


class ConvShapes:
    """Shapes and geometry accessors shared by the fixed and the learned convolution."""

    geometry: ConvGeometry

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.geometry.in_shape

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.geometry.out_shape

    @property
    def shape(self) -> tuple[int, int]:
        c, h, w = self.geometry.out_shape
        ci, hi, wi = self.geometry.in_shape
        return (c * h * w, ci * hi * wi)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.geometry.in_shape[1:]

    @property
    def stride(self) -> tuple[int, int]:
        return self.geometry.stride

    @property
    def padding(self) -> tuple[int, int]:
        return self.geometry.padding


class Conv2dOperator(ConvShapes, Operator):
    """Multi-channel 2-D convolution, then down-sampling: y_o = S(Σ_i k_{o,i} ∗ x_i).

    An image x of shape (C_in, H, W), flattened as a row, is zero-padded by ``padding``
    pixels, convolved ('valid') with each filter and sampled every ``stride`` pixels; y has
    shape ``out_shape`` (C_out, H′, W′). The adjoint is the transposed convolution
    (xie2019 §3.3's forward model is the one-channel case; sulam2018 §3's dictionaries are
    the transpose of the multi-channel one).

    Parameters
    ----------
    kernel : array or tensor, shape (C_out, C_in, kh, kw) or (kh, kw) (one channel in and out)
    image_shape : (H, W) or (C_in, H, W)
    stride : int or (sh, sw)
    padding : int, (ph, pw) or None (kh // 2 on both axes)
    dtype, device : optional conversion of ``kernel``.
    """

    kind = "conv2d"

    def __init__(self, kernel, image_shape, *, stride=1, padding=None, dtype=None, device=None):
        super().__init__()
        self.kernel = as_kernel(kernel, dtype=dtype, device=device).contiguous()
        self.geometry = ConvGeometry.of(self.kernel.shape, image_shape, stride, padding)
        self._weight = flipped(self.kernel)
        self.dtype, self.device = self.kernel.dtype, self.kernel.device

    def forward(self, X):
        return self.geometry.forward(X, self._weight)

    def adjoint(self, R):
        return self.geometry.adjoint(R, self._weight)

    def fingerprint(self) -> str:
        return conv_fingerprint(self.kernel, self.geometry)

    def spec(self):
        return {"kind": self.kind, **self.geometry.config()}, {"kernel": self.kernel}

    @classmethod
    def from_spec(cls, config: dict, tensors: dict) -> Conv2dOperator:
        return cls(
            tensors["kernel"],
            tuple(config["image_shape"]),
            stride=tuple(config["stride"]),
            padding=tuple(config["padding"]),
        )

    def to(self, dtype=None, device=None):
        op = Conv2dOperator(
            self.kernel.to(dtype=dtype or self.dtype, device=device or self.device),
            self.in_shape,
            stride=self.stride,
            padding=self.padding,
        )
        op._lipschitz = self._lipschitz
        return op
