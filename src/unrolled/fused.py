"""Fast inference for the NNLS networks: the whole net fused into one compiled pass over the batch.

A depth-K LPGD / LAPGD / Vanilla / UPGDM net is a chain of affine maps and ReLUs,
x_{k+1} = ReLU(Σ_j W_{k,j} x_{k−j} + S_k y + c_k) (xie2019 eq. 1.4, 1.6; sen2024 eq. 5 with
W = I − μW₁, S = μW₂). On small problems (10×20) eager PyTorch spends its time in one pass over
the batch per matmul, add and ReLU, each with a small inner dimension. :func:`fast` writes the
net as a short program of such layers and runs it with a small C kernel (compiled once with the
system's C compiler, cached, called through ``ctypes``): rows are taken 64 at a time, transposed
so that the 64 rows are the vector lanes, every layer computed with its accumulators in
registers and the block kept in L1 cache, and only y read and x̂ written to memory. The batch is
split across torch's thread count (``ctypes`` releases the GIL).

Without a C compiler (or for a net it cannot write as such a chain) :func:`fast` warns in one
line and returns the eager net (under ``torch.no_grad``), so the outputs are the same either way.
"""

from __future__ import annotations

import ctypes
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ._cbuild import build
from ._validate import as_batch
from .nets.nnls import LAPGD, LPGD, UPGDM, Vanilla

BLOCK = 64  # rows per block in float32 (32 in float64): the vector lanes of the kernel

# One layer output i at a time would leave the FMA units waiting on one chain of accumulators;
# four outputs at once (16 accumulators of BLOCK lanes) share each load of the source block.
KERNEL_TEMPLATE = r"""
typedef REAL NAME_vec __attribute__((vector_size(64)));
#define NV 4
#define BLOCK (NV * (int)(64 / sizeof(REAL)))
#define LANES (64 / (int)sizeof(REAL))
static inline NAME_vec NAME_load(const REAL *p) { NAME_vec v; __builtin_memcpy(&v, p, 64); return v; }
static inline void NAME_store(REAL *p, NAME_vec v) { __builtin_memcpy(p, &v, 64); }
typedef INT NAME_ivec __attribute__((vector_size(64)));
static inline NAME_vec NAME_relu(NAME_vec v) { /* max(v, 0) as a bit mask: one compare, one and */
    NAME_vec zero = {0};
    return (NAME_vec)((NAME_ivec)v & (NAME_ivec)(v > zero));
}

/* outputs i .. i + Q - 1 of one layer for a block of BLOCK rows (Q*NV accumulators in registers) */
#define NAME_OUTPUTS(Q)                                                                          \
static void NAME_out##Q(int i, const int *op, const int *dims, REAL **buf, const REAL *params) { \
    int relu = op[1], bias = op[2], nt = op[3];                                                  \
    const int *t = op + 4;                                                                       \
    NAME_vec a[Q][NV];                                                                           \
    _Pragma("GCC unroll 16") for (int q = 0; q < Q; q++) {                                       \
        REAL c = bias >= 0 ? params[bias + i + q] : 0;                                           \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) a[q][v] = c - (NAME_vec){0};        \
    }                                                                                            \
    for (int k = 0; k < nt; k++) {                                                               \
        int src = t[2 * k], mat = t[2 * k + 1], d = dims[src];                                   \
        const REAL *s = buf[src];                                                                \
        if (mat < 0) {                                                                           \
            _Pragma("GCC unroll 16") for (int q = 0; q < Q; q++)                                 \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                                 \
                a[q][v] += NAME_load(s + (i + q) * BLOCK + v * LANES);                           \
            continue;                                                                            \
        }                                                                                        \
        const REAL *w = params + mat + (long)i * d;                                              \
        for (int j = 0; j < d; j++) {                                                            \
            NAME_vec x[NV];                                                                      \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) x[v] = NAME_load(s + j * BLOCK + v * LANES); \
            _Pragma("GCC unroll 16") for (int q = 0; q < Q; q++) {                               \
                REAL wq = w[q * d + j];                                                          \
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) a[q][v] += wq * x[v];       \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    _Pragma("GCC unroll 16") for (int q = 0; q < Q; q++)                                         \
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)                                         \
        NAME_store(buf[op[0]] + (i + q) * BLOCK + v * LANES, relu ? NAME_relu(a[q][v]) : a[q][v]); \
}
NAME_OUTPUTS(4)
NAME_OUTPUTS(1)

static void NAME_layer(const int *op, const int *dims, REAL **buf, const REAL *params) {
    int i = 0;
    for (; i + 4 <= dims[op[0]]; i += 4) NAME_out4(i, op, dims, buf, params);
    for (; i < dims[op[0]]; i++) NAME_out1(i, op, dims, buf, params);
}

void NAME(const REAL *Y, REAL *X, long rows, const int *dims, int nbuf, const int *prog, int nops,
          const REAL *params, REAL *work) {
    REAL *buf[64];
    long off = 0;
    for (int b = 0; b < nbuf; b++) { buf[b] = work + off; off += (long)dims[b] * BLOCK; }
    int m = dims[0], n = dims[nbuf - 1];
    for (long r0 = 0; r0 < rows; r0 += BLOCK) {
        long nr = rows - r0 < BLOCK ? rows - r0 : BLOCK;
        if (nr == BLOCK) { /* rows in, as vector lanes (strided loads: gathers) */
            for (int j = 0; j < m; j++)
                for (int r = 0; r < BLOCK; r++) buf[0][j * BLOCK + r] = Y[(r0 + r) * m + j];
        } else {
            for (long r = 0; r < BLOCK; r++)
                for (int j = 0; j < m; j++) buf[0][j * BLOCK + r] = r < nr ? Y[(r0 + r) * m + j] : 0;
        }
        const int *p = prog;
        for (int o = 0; o < nops; o++) {
            NAME_layer(p, dims, buf, params);
            p += 4 + 2 * p[3];
        }
        if (nr == BLOCK) {
            for (int i = 0; i < n; i++)
                for (int r = 0; r < BLOCK; r++) X[(r0 + r) * n + i] = buf[nbuf - 1][i * BLOCK + r];
        } else {
            for (long r = 0; r < nr; r++)
                for (int i = 0; i < n; i++) X[(r0 + r) * n + i] = buf[nbuf - 1][i * BLOCK + r];
        }
    }
}
#undef BLOCK
#undef LANES
#undef NV
"""
KERNEL = "".join(
    KERNEL_TEMPLATE.replace("NAME", name).replace("REAL", real).replace("INT", integer)
    for name, real, integer in (("chain_float", "float", "int"), ("chain_double", "double", "long long"))
)

MAX_BUFFERS = 64


class Program:
    """A chain of layers on buffers: buffer 0 is y; each layer makes a new buffer
    ReLU?(Σ terms + bias), a term being (source buffer, matrix (out, in)) or (source, None) = the
    source itself. The net's output is the last buffer."""

    def __init__(self, m: int, dtype: torch.dtype):
        self.dims, self.ops, self.mats, self.dtype = [m], [], [], dtype
        self.size, self._products = 0, {}

    def _param(self, tensor: torch.Tensor) -> int:
        flat = tensor.detach().to("cpu", self.dtype).contiguous().reshape(-1)
        self.mats.append(flat)
        self.size += flat.numel()
        return self.size - flat.numel()

    def layer(self, terms, *, relu: bool = True, bias: torch.Tensor | None = None) -> int:
        """Append a layer; returns its buffer."""
        out = None
        encoded = []
        for src, W in terms:
            if W is not None and W.shape[1] != self.dims[src]:
                raise ValueError(f"a {tuple(W.shape)} matrix cannot act on a buffer of {self.dims[src]}")
            out = W.shape[0] if W is not None else self.dims[src]
            encoded += [src, -1 if W is None else self._param(W)]
        out = bias.shape[0] if out is None else out
        self.ops.append([len(self.dims), int(relu), -1 if bias is None else self._param(bias), len(terms), *encoded])
        self.dims.append(out)
        if len(self.dims) > MAX_BUFFERS:
            raise ValueError(f"nets of more than {MAX_BUFFERS - 1} layers have no fused path")
        return len(self.dims) - 1

    def product(self, src: int, W: torch.Tensor) -> int:
        """A buffer W·src without activation, computed once per distinct W (a tied S y)."""
        key = (src, W.data_ptr(), tuple(W.shape))
        if key not in self._products:
            self._products[key] = self.layer([(src, W)], relu=False)
        return self._products[key]


def _lpgd(net: LPGD, p: Program):
    x = None
    for k in range(net.depth):
        terms = []
        if k == 0 or net.skip:
            terms.append((p.product(0, net.S[k] if len(net.S) > 1 else net.S[0]), None))
        if k:
            terms.append((x, net.at(net.W, k - 1)))
        x = p.layer(terms)


def _lapgd(net: LAPGD, p: Program):
    x_prev = x = None
    for k in range(net.depth):
        terms = [(p.product(0, net.S[k] if len(net.S) > 1 else net.S[0]), None)]
        if k:
            terms.append((x, net.at(net.W1, k - 1)))
        if k > 1:
            terms.append((x_prev, net.at(net.W2, k - 2)))
        x_prev, x = x, p.layer(terms)


def _vanilla(net: Vanilla, p: Program):
    x = None
    for k in range(net.depth):
        terms = [(0, net.S)] if k == 0 else [(x, net.W[k - 1])]
        x = p.layer(terms, bias=None if net.c is None else net.c[k])


def _upgdm(net: UPGDM, p: Program):
    s = None  # s₀ = 0: layer 1 is ReLU(μ₁W₂¹y)
    eye = torch.eye(net.n, dtype=net.dtype, device=net.op.device)
    for k in range(net.depth):
        pair, mu = net._layer_pair(k)
        terms = [(0, mu * pair.W2)]
        if k:
            terms.append((s, eye - mu * pair.W1))
        s = p.layer(terms)


WRITERS = {LPGD: _lpgd, LAPGD: _lapgd, Vanilla: _vanilla, UPGDM: _upgdm}


def program_of(net) -> Program:
    """The net as a :class:`Program`; ValueError for a net that is not an affine–ReLU chain."""
    writer = WRITERS.get(type(net))
    if writer is None:
        raise ValueError(f"{type(net).__name__} has no fused path (only {', '.join(c.__name__ for c in WRITERS)})")
    p = Program(net.m, net.dtype)
    with torch.no_grad():
        writer(net, p)
    return p


# -- the compiled kernel ----------------------------------------------------------------------------


def _cpu_key() -> str:
    try:
        flags = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")][:1]
    except OSError:
        flags = []
    return "".join(flags) + sys.platform


FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffp-contract=fast", "-shared", "-fPIC"]
_LIBRARY: list = []


def kernel_library() -> ctypes.CDLL:
    """The compiled kernel (:func:`unrolled._cbuild.build`, keyed by source, flags and CPU).
    Raises OSError when it cannot be built."""
    if _LIBRARY:
        return _LIBRARY[0]
    lib = build("fast", KERNEL, FLAGS, machine=_cpu_key())
    for name, real in (("chain_float", ctypes.c_float), ("chain_double", ctypes.c_double)):
        fn = getattr(lib, name)
        ptr, iptr = ctypes.POINTER(real), ctypes.POINTER(ctypes.c_int)
        fn.argtypes = [ptr, ptr, ctypes.c_long, iptr, ctypes.c_int, iptr, ctypes.c_int, ptr, ptr]
        fn.restype = None
    _LIBRARY.append(lib)
    return lib


class FastNet:
    """``fast(Y)``: the net's output for rows Y (batch, m) (or one vector), by the fused kernel.

    Holds a snapshot of the net's weights (call :func:`fast` again after training further).
    Torch tensors in, torch tensors out; NumPy in, NumPy out; on the CPU, in the net's dtype.
    """

    def __init__(self, net, program: Program, lib: ctypes.CDLL):
        self.net, self.program = net, program
        self.fn = lib.chain_float if program.dtype == torch.float32 else lib.chain_double
        self.real = ctypes.c_float if program.dtype == torch.float32 else ctypes.c_double
        self.params = torch.cat(program.mats) if program.mats else torch.zeros(1, dtype=program.dtype)
        self.dims = np.asarray(program.dims, dtype=np.intc)
        self.prog = np.asarray([v for op in program.ops for v in op], dtype=np.intc)

    def _run(self, Y: torch.Tensor, X: torch.Tensor, start: int, stop: int) -> None:
        rp = ctypes.POINTER(self.real)
        ip = ctypes.POINTER(ctypes.c_int)
        work = torch.empty(sum(self.program.dims) * BLOCK, dtype=self.program.dtype)  # float64 uses half
        m, n = self.program.dims[0], self.program.dims[-1]
        self.fn(
            ctypes.cast(Y.data_ptr() + start * m * Y.element_size(), rp),
            ctypes.cast(X.data_ptr() + start * n * X.element_size(), rp),
            stop - start,
            self.dims.ctypes.data_as(ip),
            len(self.program.dims),
            self.prog.ctypes.data_as(ip),
            len(self.program.ops),
            ctypes.cast(self.params.data_ptr(), rp),
            ctypes.cast(work.data_ptr(), rp),
        )

    def __call__(self, Y):
        Y_t, kind = as_batch(Y, "Y", dtype=self.program.dtype, device="cpu")
        if Y_t.shape[1] != self.program.dims[0]:
            raise ValueError(f"Y has {Y_t.shape[1]} entries per signal, the net takes {self.program.dims[0]}")
        Y_t = Y_t.contiguous()
        X = torch.empty(Y_t.shape[0], self.program.dims[-1], dtype=self.program.dtype)
        parts = max(1, min(torch.get_num_threads(), Y_t.shape[0] // (4 * BLOCK)))
        bounds = [round(i * Y_t.shape[0] / parts / BLOCK) * BLOCK for i in range(parts)] + [Y_t.shape[0]]
        if parts == 1:
            self._run(Y_t, X, 0, Y_t.shape[0])
        else:
            with ThreadPoolExecutor(parts) as pool:
                list(pool.map(lambda i: self._run(Y_t, X, bounds[i], bounds[i + 1]), range(parts)))
        if isinstance(Y, torch.Tensor):
            return X[0] if kind.vector else X
        return kind.restore(X)


class _Eager:
    """The eager net under ``torch.no_grad()`` (the fallback of :func:`fast`)."""

    def __init__(self, net):
        self.net = net

    def __call__(self, Y):
        with torch.no_grad():
            return self.net(Y)


def fast(net):
    """A callable computing ``net(Y)`` for inference (no gradients), fused and compiled where possible.

    Parameters
    ----------
    net : UnrolledNet
        An LPGD, LAPGD, Vanilla or UPGDM network (the affine–ReLU chains of xie2019 eq. 1.4, 1.6
        and sen2024 eq. 5), float32 or float64, on the CPU. Other nets, other devices, or a
        machine without a C compiler: the eager net, with a one-line warning.

    Returns
    -------
    callable
        ``f(Y)`` → X̂ (batch, n) for Y (batch, m), equal to ``net(Y)`` to rounding.
    """
    from .nets.base import UnrolledNet

    if not isinstance(net, UnrolledNet):
        raise TypeError(f"ur.fast takes an unrolled network (unrolled.nets), got {type(net).__name__}")
    reason = None
    if net.op.device.type != "cpu" or net.dtype not in (torch.float32, torch.float64):
        reason = f"the fused path runs float32/float64 on the CPU, not {net.dtype} on {net.op.device}"
    else:
        try:
            return FastNet(net, program_of(net), kernel_library())
        except (ValueError, OSError) as exc:
            reason = str(exc)
    warnings.warn(f"unrolled.fast: using the eager net ({reason})", RuntimeWarning, stacklevel=2)
    return _Eager(net)
