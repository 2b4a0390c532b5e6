"""Exact integer products W·q in the cheapest exact type.

A stage's product sums fan_in terms w·q with |q| <= Q; every partial sum is bounded by
Q · max_i Σ_j |w_ij| (its row with the largest absolute sum; a reduce core's full sums obey the
same bound). That bound, known from the weights and the spike code before anything runs,
decides the arithmetic:

  int8     bound < 2**24, |w| <= 127 and 2Q <= 255: oneDNN's u8·s8 → s32 GEMM (q + Q as the
           unsigned input with zero point Q), whose integer sums come out as float32 — exact
           below 2**24; ~4x the speed of float32 BLAS on CPUs with VNNI.
  float32  bound < 2**24: BLAS on integer-valued floats (every partial sum exact).
  float64  bound < 2**53.

Past 2**53 no float type is exact: OutOfRange (an SdllmError and an OverflowError).
"""

import numpy as np

from sdllm.errors import OutOfRange

EXACT_BITS = {"float32": 24, "float64": 53}
SERIAL_ROWS = 16


def bound(w: np.ndarray, q_max: int) -> int:
    """The largest |partial sum| of W·q over every q with |q| <= q_max: Q · max row Σ|w|."""
    w = np.asarray(w)
    magnitude = np.abs(w.astype(np.int16 if w.dtype.itemsize == 1 else np.int64))  # |int8| fits int16
    return int(q_max) * int(magnitude.sum(1, dtype=np.int64).max(initial=0))


def float_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b through torch: its thread pool is the one the int8 GEMMs and the numba kernels take
    turns with. numpy's OpenBLAS threads spin after each call and starve the kernels that follow
    (a third of a window's time on 2 cores)."""
    import torch

    return torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _onednn():
    try:
        import torch

        return torch.ops.onednn.qlinear_pointwise if hasattr(torch.ops.onednn, "qlinear_prepack") else None
    except (ImportError, AttributeError, RuntimeError):
        return None


def exact_type(bound_: int, w_max: int, q_max: int, int8: bool = True) -> str:
    """The cheapest type in which every partial sum up to `bound_` is exact."""
    if bound_ < 1 << EXACT_BITS["float32"]:
        if int8 and w_max <= 127 and 2 * q_max <= 255 and _onednn() is not None:
            return "int8"
        return "float32"
    if bound_ < 1 << EXACT_BITS["float64"]:
        return "float64"
    raise OutOfRange(f"integer product bound {bound_} exceeds float64's exact range")


class ExactProduct:
    """x (rows, n_in) integers with |x| <= q_max  ->  x @ Wᵀ (rows, n_out) int64, exactly."""

    def __init__(self, w: np.ndarray, q_max: int, int8: bool = True):
        w = np.asarray(w)
        self.q_max = int(q_max)
        self.bound = bound(w, q_max)
        self.kind = exact_type(self.bound, int(np.abs(w).max(initial=0)), self.q_max, int8)
        self.n_out = w.shape[0]
        if self.kind == "int8":
            import torch

            self._w = torch.ops.onednn.qlinear_prepack(torch.from_numpy(np.ascontiguousarray(w, np.int8)), None)
            self._ones = torch.ones(self.n_out)
            self._zeros = torch.zeros(self.n_out, dtype=torch.int64)
        else:
            self._wt = np.ascontiguousarray(w.T, dtype=np.float32 if self.kind == "float32" else np.float64)

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x)
        if self.kind != "int8":
            return float_matmul(x.astype(self._wt.dtype), self._wt).astype(np.int64)
        import torch

        rows = x.reshape(-1, x.shape[-1])
        xu = torch.from_numpy(np.add(rows, self.q_max, dtype=np.uint8, casting="unsafe"))  # one pass, no int64 temporary
        threads = torch.get_num_threads()
        if len(rows) < SERIAL_ROWS:  # a few rows (one token): waking a second thread costs more than it saves
            torch.set_num_threads(1)
        try:
            y = torch.ops.onednn.qlinear_pointwise(xu, 1.0, self.q_max, self._w, self._ones, self._zeros, None, 1.0, 0,
                                                   torch.float32, "none", [], "")
        finally:
            torch.set_num_threads(threads)
        return y.numpy().astype(np.int64).reshape(*x.shape[:-1], self.n_out)
