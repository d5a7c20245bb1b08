"""numba-batch: minibatch training as njit kernels over theta (layout: impls/numba_kernels.py).

Below ``BLAS_FROM`` it runs loop kernels, compiled serial: four batch rows (or four output units)
per pass over a weight row. From ``BLAS_FROM`` on, every layer's products go through BLAS
(np.dot: SciPy's OpenBLAS), and the batch is split into one part per numba thread: each part's
rows go forward and backward on a thread of their own, with BLAS held to one thread, into a
gradient buffer of their own; then each thread sums the parts' gradients over its slice of theta
and steps the optimizer there. Measured on 2 threads (docs/performance.md, "numba-batch split by
rows"): 107k samples/s against 81k when OpenBLAS's own two threads shared each product of the
whole batch and the elementwise passes and Adam ran on one; on 1 thread, within 1% of that.
BLAS must be held to one thread inside the parts: two threads each calling a two-thread
OpenBLAS ran at 14k.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from impls.numba_kernels import (_FASTMATH, ONE, NumbaBase, _activate, _input_delta, _layer_forward,
                                 _optimizer_step, _optimizer_step_inline, _softmax_loss, _variant, blas_threads)

# ---- minibatch kernels: 4 rows (or 4 output units) per pass over a weight row ------------
# One pass over a row of W^T serves four samples at once, so W (800 kB for net B's first
# layer) is streamed from cache a quarter as often. Remainders use the one-sample kernels.


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _forward_rows4(theta, w, b, n_in, n_out, A, r0, ai0, ao0, last, relu, one):
    WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
    a0, a1 = A[r0, ai0:ai0 + n_in], A[r0 + 1, ai0:ai0 + n_in]
    a2, a3 = A[r0 + 2, ai0:ai0 + n_in], A[r0 + 3, ai0:ai0 + n_in]
    for j in range(n_out):
        s0 = s1 = s2 = s3 = theta[b + j]
        for i in range(n_in):
            wji = WT[j, i]
            s0 += wji * a0[i]
            s1 += wji * a1[i]
            s2 += wji * a2[i]
            s3 += wji * a3[i]
        A[r0, ao0 + j] = _activate(s0, last, relu, one)
        A[r0 + 1, ao0 + j] = _activate(s1, last, relu, one)
        A[r0 + 2, ao0 + j] = _activate(s2, last, relu, one)
        A[r0 + 3, ao0 + j] = _activate(s3, last, relu, one)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _input_delta_rows4(theta, w, n_in, n_out, A, D, r0, ai0, ao0, relu, one):
    WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
    d0, d1 = D[r0, ai0:ai0 + n_in], D[r0 + 1, ai0:ai0 + n_in]
    d2, d3 = D[r0 + 2, ai0:ai0 + n_in], D[r0 + 3, ai0:ai0 + n_in]
    for i in range(n_in):
        d0[i] = d1[i] = d2[i] = d3[i] = one * 0
    for j in range(n_out):
        e0, e1, e2, e3 = D[r0, ao0 + j], D[r0 + 1, ao0 + j], D[r0 + 2, ao0 + j], D[r0 + 3, ao0 + j]
        for i in range(n_in):
            wji = WT[j, i]
            d0[i] += e0 * wji
            d1[i] += e1 * wji
            d2[i] += e2 * wji
            d3[i] += e3 * wji
    for r in range(r0, r0 + 4):
        for i in range(n_in):
            a = A[r, ai0 + i]
            if relu:
                D[r, ai0 + i] = D[r, ai0 + i] if a > 0 else D[r, ai0 + i] * 0
            else:
                D[r, ai0 + i] *= a * (one - a)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _weight_grad_cols(g, w, b, n_in, n_out, A, D, nb, j0, width, ai0, ao0):
    """dW^T[j0:j0+width] = D[:, j0:j0+width]^T @ A and db, for width 4 or 1."""
    GT = g[w:w + n_in * n_out].reshape((n_out, n_in))
    zero = A[0, 0] * 0
    for j in range(j0, j0 + width):
        for i in range(n_in):
            GT[j, i] = zero
        g[b + j] = zero
    if width == 4:
        g0, g1, g2, g3 = GT[j0], GT[j0 + 1], GT[j0 + 2], GT[j0 + 3]
        for r in range(nb):
            a = A[r, ai0:ai0 + n_in]
            e0, e1, e2, e3 = D[r, ao0 + j0], D[r, ao0 + j0 + 1], D[r, ao0 + j0 + 2], D[r, ao0 + j0 + 3]
            for i in range(n_in):
                ai = a[i]
                g0[i] += e0 * ai
                g1[i] += e1 * ai
                g2[i] += e2 * ai
                g3[i] += e3 * ai
    else:
        gj = GT[j0]
        for r in range(nb):
            e = D[r, ao0 + j0]
            for i in range(n_in):
                gj[i] += e * A[r, ai0 + i]
    for j in range(j0, j0 + width):
        for r in range(nb):
            g[b + j] += D[r, ao0 + j]


def _epoch_batch(x, y, order, theta, sizes, w_off, b_off, a_off, hp, relu, kind, batch,
                 g, m, v, state, A, D, losses):
    """Minibatch training over x[order]; A and D are (batch, sum(sizes)) work buffers.
    Compiled serial below (prange is range there)."""
    L = sizes.shape[0] - 1
    n0 = sizes[0]
    one = hp[ONE]
    n = order.shape[0]
    total = 0.0
    for start in range(0, n, batch):
        nb = min(batch, n - start)
        scale = one / nb
        for r in prange(nb):
            A[r, 0:n0] = x[order[start + r]]
        for k in range(L):                                     # forward, 4 rows per task
            n_in, n_out, ai0, ao0 = sizes[k], sizes[k + 1], a_off[k], a_off[k + 1]
            for blk in prange((nb + 3) // 4):
                r0 = 4 * blk
                if r0 + 4 <= nb:
                    _forward_rows4(theta, w_off[k], b_off[k], n_in, n_out, A, r0, ai0, ao0, k == L - 1, relu, one)
                else:
                    for r in range(r0, nb):
                        _layer_forward(theta, w_off[k], b_off[k], n_in, n_out,
                                       A[r, ai0:], A[r, ao0:], k == L - 1, relu, one)
        for r in prange(nb):
            dz = D[r, a_off[L]:]
            losses[r] = _softmax_loss(A[r, a_off[L]:a_off[L] + sizes[L]], y[order[start + r]], dz)
            for j in range(sizes[L]):
                dz[j] *= scale                                 # the loss is a batch mean
        for r in range(nb):
            total += losses[r]
        for k in range(L - 1, -1, -1):
            n_in, n_out, w, b = sizes[k], sizes[k + 1], w_off[k], b_off[k]
            ai0, ao0 = a_off[k], a_off[k + 1]
            if k > 0:                                          # before this layer's W changes
                for blk in prange((nb + 3) // 4):
                    r0 = 4 * blk
                    if r0 + 4 <= nb:
                        _input_delta_rows4(theta, w, n_in, n_out, A, D, r0, ai0, ao0, relu, one)
                    else:
                        for r in range(r0, nb):
                            _input_delta(theta, w, n_in, n_out, D[r, ao0:], A[r, ai0:], D[r, ai0:], relu, one)
            full = n_out // 4
            for blk in prange(full + (n_out - 4 * full)):      # 4 output units per task, then singles
                if blk < full:
                    _weight_grad_cols(g, w, b, n_in, n_out, A, D, nb, 4 * blk, 4, ai0, ao0)
                else:
                    _weight_grad_cols(g, w, b, n_in, n_out, A, D, nb, 4 * full + (blk - full), 1, ai0, ao0)
        state[0] += 1
        _optimizer_step_inline(theta, g, m, v, hp, kind, state[0])
    return total / max(n, 1)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _part_grads(x, y, order, start, r0, r1, scale, theta, sizes, w_off, b_off, a_off, hp, relu, batch, g, abuf, dbuf):
    """Rows r0:r1 of the batch at ``start``: forward and backward with every product in BLAS,
    their share of the batch-mean gradient into g (theta's layout); returns their summed loss.
    abuf and dbuf are flat: layer k's (rows, n_k) block starts at batch * a_off[k], so each
    block is C-contiguous, as np.dot needs; W^T's transpose is an F-contiguous view."""
    L = sizes.shape[0] - 1
    n0 = sizes[0]
    one = hp[ONE]
    nb = r1 - r0
    if nb == 0:                                                # a short last batch, fewer rows than parts
        g[:] = one * 0
        return 0.0
    total = 0.0
    A0 = abuf[0:nb * n0].reshape((nb, n0))
    for r in range(nb):
        A0[r] = x[order[start + r0 + r]]
    for k in range(L):
        n_in, n_out, w, b = sizes[k], sizes[k + 1], w_off[k], b_off[k]
        Ain = abuf[batch * a_off[k]:batch * a_off[k] + nb * n_in].reshape((nb, n_in))
        Aout = abuf[batch * a_off[k + 1]:batch * a_off[k + 1] + nb * n_out].reshape((nb, n_out))
        WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
        np.dot(Ain, WT.T, Aout)
        for r in range(nb):
            for j in range(n_out):
                Aout[r, j] = _activate(Aout[r, j] + theta[b + j], k == L - 1, relu, one)
    nL = sizes[L]
    ZL = abuf[batch * a_off[L]:batch * a_off[L] + nb * nL].reshape((nb, nL))
    DL = dbuf[batch * a_off[L]:batch * a_off[L] + nb * nL].reshape((nb, nL))
    for r in range(nb):
        total += _softmax_loss(ZL[r], y[order[start + r0 + r]], DL[r])
        for j in range(nL):
            DL[r, j] *= scale                                  # the loss is a batch mean
    for k in range(L - 1, -1, -1):
        n_in, n_out, w, b = sizes[k], sizes[k + 1], w_off[k], b_off[k]
        Ain = abuf[batch * a_off[k]:batch * a_off[k] + nb * n_in].reshape((nb, n_in))
        Dout = dbuf[batch * a_off[k + 1]:batch * a_off[k + 1] + nb * n_out].reshape((nb, n_out))
        WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
        if k > 0:                                              # before this layer's W changes
            Din = dbuf[batch * a_off[k]:batch * a_off[k] + nb * n_in].reshape((nb, n_in))
            np.dot(Dout, WT, Din)
            for r in range(nb):
                for i in range(n_in):
                    a = Ain[r, i]
                    if relu:
                        Din[r, i] = Din[r, i] if a > 0 else Din[r, i] * 0
                    else:
                        Din[r, i] *= a * (one - a)
        GT = g[w:w + n_in * n_out].reshape((n_out, n_in))
        np.dot(Dout.T, Ain, GT)
        for j in range(n_out):
            g[b + j] = one * 0
        for r in range(nb):
            for j in range(n_out):
                g[b + j] += Dout[r, j]
    return total


_optimizer_step_serial = njit(cache=True, fastmath=_FASTMATH, error_model="numpy")(_variant(_optimizer_step, "_serial"))


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", parallel=True)
def _epoch_batch_blas(x, y, order, theta, sizes, w_off, b_off, a_off, hp, relu, kind, batch,
                      gs, m, v, state, abufs, dbufs, losses):
    """Minibatch training split into gs.shape[0] parts of every batch's rows (one per thread):
    part k's gradient goes to gs[k], with its own work buffers abufs[k] and dbufs[k]; then each
    thread sums the parts into gs[0] over its slice of theta and steps the optimizer there (through
    a compiled call, not the inlined step, whose prange would nest in this one)."""
    parts = gs.shape[0]
    size = theta.shape[0]
    one = hp[ONE]
    n = order.shape[0]
    total = 0.0
    for start in range(0, n, batch):
        nb = min(batch, n - start)
        for k in prange(parts):
            losses[k] = _part_grads(x, y, order, start, k * nb // parts, (k + 1) * nb // parts, one / nb, theta,
                                    sizes, w_off, b_off, a_off, hp, relu, batch, gs[k], abufs[k], dbufs[k])
        for k in range(parts):
            total += losses[k]
        state[0] += 1
        step = state[0]
        for k in prange(parts):
            p0, p1 = k * size // parts, (k + 1) * size // parts
            g = gs[0]
            for q in range(1, parts):
                gq = gs[q]
                for p in range(p0, p1):
                    g[p] += gq[p]
            _optimizer_step_serial(theta[p0:p1], g[p0:p1], m[p0:p1], v[p0:p1], hp, kind, step)
    return total / max(n, 1)


# Compiled serial only. With prange parallel it led this serial compile only at batch 32 on a quiet
# machine (594k against 372k samples/s in one run, equal in another), where BLAS runs instead,
# and lost 2.4x at batch 1 quiet and 2.7-19x beside one busy process (docs/performance.md,
# "Small batches, threads and a busy machine").
_epoch_batch_serial = njit(cache=True, fastmath=_FASTMATH, error_model="numpy")(_variant(_epoch_batch, "_serial"))
# From this batch size on, every layer's products go through BLAS (_epoch_batch_blas). Measured
# (docs/performance.md, "numba kernels"), 1 thread, CPU time: on hw1-q3 (batch 256, Adam) 1.28x
# numpy-batch and 1.7x the 4-row loop kernels; at batch 32 BLAS still led the serial loops on
# both nets (1.17x, 1.14x); at batch 8 the loops led (0.85x). A part gets PART_ROWS rows at least.
BLAS_FROM, PART_ROWS = 32, 16


def parts_for(batch: int, threads: int) -> int:
    """How many parts the BLAS kernel splits a batch into: one per thread, each of at least PART_ROWS rows."""
    return max(1, min(threads, batch // PART_ROWS))


class NumbaBatch(NumbaBase):
    name = "numba-batch"
    description = "minibatch njit loops, 4 batch rows per pass over a weight row; from batch 32, BLAS on rows split by thread"

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        width = int(self._a_off[-1])
        self._A = np.zeros((self.batch_size, width), dtype=self.dtype)
        self._D = np.zeros_like(self._A)
        self._losses = np.zeros(self.batch_size, dtype=np.float64)
        self._split = None                        # the BLAS kernel's per-part buffers, sized by parts_for

    def _parts(self) -> tuple:
        parts = parts_for(self.batch_size, numba.get_num_threads())
        if self._split is None or self._split[0].shape[0] != parts:
            width = self.batch_size * int(self._a_off[-1])
            self._split = (np.zeros((parts, self.theta.size), self.dtype),
                           np.zeros((parts, width), self.dtype), np.zeros((parts, width), self.dtype), np.zeros(parts))
        return self._split

    def train_epoch(self, x, y, order):
        x, y, order = self._check_data(x, y, order)
        if self.batch_size >= BLAS_FROM:
            gs, abufs, dbufs, losses = self._parts()
            with blas_threads().limit(limits=1, user_api="blas"):
                return float(_epoch_batch_blas(x, y, order, self.theta, self._sizes, self._w_off, self._b_off,
                                               self._a_off, self._hp, self.spec.activation == "relu", self._kind,
                                               self.batch_size, gs, self._m, self._v, self._state,
                                               abufs, dbufs, losses))
        return float(_epoch_batch_serial(x, y, order, self.theta, self._sizes, self._w_off, self._b_off,
                                         self._a_off, self._hp, self.spec.activation == "relu", self._kind,
                                         self.batch_size, self._g, self._m, self._v, self._state,
                                         self._A, self._D, self._losses))
