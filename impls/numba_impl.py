"""numba-sample and numba-batch: the network as explicit loops, compiled with numba.njit.

Parameters live in one flat vector ``theta`` so that one compiled kernel serves any number of
layers: layer k's weights are stored transposed, ``W^T`` (n_out, n_in) row-major at
``theta[w_off[k]:]``, and its ``b`` at ``theta[b_off[k]:]``. Transposed, every inner loop runs
over the long input axis (784 for layer 1): forward is a dot product per output unit, the
update an axpy per output unit, both contiguous; that measured 1.7x faster than 32-wide
inner loops over W's rows. Activations and deltas of all layers share one buffer each, layer k at
``a_off[k]`` (layer 0 is the input).

Why loops and not np.dot per sample: inside njit, np.dot goes through SciPy's BLAS with a
per-call cost that dominates per-sample work (docs/performance.md). From batch ``BLAS_FROM``
on, the products are big enough and numba-batch calls it for every layer (_epoch_batch_blas). The loops are dense on purpose: skipping the zero
pixels (half of a Fashion-MNIST image) measured 1.9x slower here, because the branch stops
LLVM from vectorising the 32-wide inner loop.
Typed constants (``one``) come from the run dtype, since a Python float literal would turn
float32 arithmetic into float64.

numba-sample is sequential by nature. numba-batch below ``BLAS_FROM`` runs loop kernels: in
parallel with prange over the rows of a batch (forward, input gradients) and over output units
(weight gradients), one level only, numba's pool the only one working while it runs; small
batches (``SERIAL_BELOW``) and a single thread run the same kernel compiled serial. From
``BLAS_FROM`` on, BLAS's own threads share the GEMMs and the elementwise loops run serial.
The optimizers are one fused loop each: per sample inside the gradient loop
(``_layer_update``), per batch one pass over the flat gradient (``_optimizer_step``).
"""
from __future__ import annotations

import types

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  np.dot's BLAS, loaded now so that thread pinning reaches it
from numba import njit, prange

from impls.base import Implementation

# No "nnan"/"ninf": a diverging run must still produce NaN, so the harness can stop it.
# error_model="numpy" everywhere: under numba's default ("python") every float division checks
# for zero to raise ZeroDivisionError, and that branch kept LLVM from vectorising the Adam loops
# (measured: 1.9 ms against 43 us per Adam step of hw1-q3's 235k parameters, float32). With
# numpy's model a division by zero gives inf or NaN, as numpy does.
_FASTMATH = {"reassoc", "contract", "arcp"}
SGD, MOMENTUM, ADAM = 0, 1, 2
# hp vector (run dtype): lr, momentum, beta1, beta2, eps, one
LR, MU, B1, B2, EPS, ONE = range(6)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _sigmoid(z, one):
    if z >= 0:
        return one / (one + np.exp(-z))
    e = np.exp(z)
    return e / (one + e)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _activate(s, last, relu, one):
    if last:
        return s
    if relu:
        return s if s > 0 else s * 0
    return _sigmoid(s, one)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _layer_forward(theta, w, b, n_in, n_out, a_in, a_out, last, relu, one):
    """a_out = act(W^T a_in + b) for one sample; the last layer returns logits."""
    WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
    for j in range(n_out):
        s = theta[b + j]
        for i in range(n_in):                                 # dot(W^T[j, :], a_in)
            s += WT[j, i] * a_in[i]
        if last:
            a_out[j] = s
        elif relu:
            a_out[j] = s if s > 0 else s * 0
        else:
            a_out[j] = _sigmoid(s, one)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _softmax_loss(z, label, out):
    """Writes dL/dz = softmax(z) - onehot(label) into out; returns -log softmax(z)[label]."""
    m = z[0]
    for j in range(1, z.shape[0]):
        m = max(m, z[j])
    s = z[0] * 0
    for j in range(z.shape[0]):
        out[j] = np.exp(z[j] - m)
        s += out[j]
    for j in range(z.shape[0]):
        out[j] /= s
    out[label] -= 1
    return np.log(s) - (z[label] - m)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _input_delta(theta, w, n_in, n_out, d_out, a_in, d_in, relu, one):
    """d_in = (W d_out) * act'(z_in), given a_in = act(z_in)."""
    WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
    for i in range(n_in):
        d_in[i] = d_out[0] * 0
    for j in range(n_out):
        dj = d_out[j]
        for i in range(n_in):                                 # d_in += d_out[j] * W^T[j, :]
            d_in[i] += dj * WT[j, i]
    for i in range(n_in):
        a = a_in[i]
        if relu:
            d_in[i] = d_in[i] if a > 0 else d_in[i] * 0
        else:
            d_in[i] *= a * (one - a)


def _optimizer_step(theta, g, m, v, hp, kind, t):
    """theta -= update(g); t is the Adam step (1-based). Compiled serial and parallel below."""
    lr = hp[LR]
    if kind == SGD:
        for p in prange(theta.shape[0]):
            theta[p] -= lr * g[p]
    elif kind == MOMENTUM:
        mu = hp[MU]
        for p in prange(theta.shape[0]):
            v[p] = mu * v[p] + g[p]
            theta[p] -= lr * v[p]
    else:
        one, b1, b2, eps = hp[ONE], hp[B1], hp[B2], hp[EPS]
        bc1 = one - b1 ** t
        bc2 = one - b2 ** t
        for p in prange(theta.shape[0]):
            m[p] = b1 * m[p] + (one - b1) * g[p]
            v[p] = b2 * v[p] + (one - b2) * (g[p] * g[p])
            theta[p] -= lr * (m[p] / bc1) / (np.sqrt(v[p] / bc2) + eps)


def _variant(func, suffix: str):
    """``func`` under another name. numba's cache keys compiled code by the function's name,
    bytecode and signature, not by the options it was compiled with: two dispatchers of one
    function (serial and parallel) would share one cache entry, and whichever compiled first
    would run for both (measured: the "serial" kernel ran at the parallel one's speed)."""
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix, func.__defaults__,
                              func.__closure__)
    copy.__qualname__ = func.__qualname__ + suffix
    return copy


# inlined into the epoch kernels below: parallel inside the parallel one, serial in the serial one
_optimizer_step_inline = njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")(_variant(_optimizer_step, "_inline"))


# ---- per-sample kernels ---------------------------------------------------------------------
# Plain SGD (hw1-q4) runs _epoch_sample_sgd: the first layer's update of sample t is fused with
# sample t+1's first-layer forward (_first_layer), so W1, which lives in L2 and not in L1, is
# read and written once per sample instead of read twice and written once; the other layers
# run the generic loops. Momentum and Adam run _epoch_sample: the generic loops, each layer's
# optimizer update fused into the loop that produces its gradient (_layer_update), so no
# gradient buffer and no separate pass. Measured in docs/performance.md ("numba kernels"),
# with the family's reference, benchmarks/references/numba_sample_best.py.


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _first_layer(WT, b, xp, c, xn, a_out, pending, last, relu, one):
    """a_out = act(W^T xn + b), after W^T -= outer(c, xp) when ``pending``: both in one sweep
    of x per 4 output units, each element of W^T read and written once."""
    n_out, n_in = WT.shape
    j = 0
    while j + 4 <= n_out:
        w0, w1, w2, w3 = WT[j], WT[j + 1], WT[j + 2], WT[j + 3]
        s0, s1, s2, s3 = b[j], b[j + 1], b[j + 2], b[j + 3]
        if pending:
            c0, c1, c2, c3 = c[j], c[j + 1], c[j + 2], c[j + 3]
            for i in range(n_in):
                p, q = xp[i], xn[i]
                u0 = w0[i] - c0 * p
                u1 = w1[i] - c1 * p
                u2 = w2[i] - c2 * p
                u3 = w3[i] - c3 * p
                w0[i] = u0
                w1[i] = u1
                w2[i] = u2
                w3[i] = u3
                s0 += u0 * q
                s1 += u1 * q
                s2 += u2 * q
                s3 += u3 * q
        else:
            for i in range(n_in):
                q = xn[i]
                s0 += w0[i] * q
                s1 += w1[i] * q
                s2 += w2[i] * q
                s3 += w3[i] * q
        a_out[j] = _activate(s0, last, relu, one)
        a_out[j + 1] = _activate(s1, last, relu, one)
        a_out[j + 2] = _activate(s2, last, relu, one)
        a_out[j + 3] = _activate(s3, last, relu, one)
        j += 4
    while j < n_out:                                          # the remainder, one unit a sweep
        wj = WT[j]
        s = b[j]
        if pending:
            cj = c[j]
            for i in range(n_in):
                wj[i] -= cj * xp[i]
                s += wj[i] * xn[i]
        else:
            for i in range(n_in):
                s += wj[i] * xn[i]
        a_out[j] = _activate(s, last, relu, one)
        j += 1


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _dense(WT, b, a_in, a_out, last, relu, one):
    """a_out = act(W^T a_in + b), W^T a 2-D view; inlined, so no call and no refcounts per layer."""
    for j in range(WT.shape[0]):
        s = b[j]
        for i in range(WT.shape[1]):
            s += WT[j, i] * a_in[i]
        a_out[j] = _activate(s, last, relu, one)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _backprop_sgd(WT, b, d_out, a_in, d_in, lr, relu, one):
    """d_in = (W d_out) * act'(z_in) with W as it was, then W^T -= lr * outer(d_out, a_in)."""
    n_out, n_in = WT.shape
    for i in range(n_in):
        d_in[i] = one * 0
    for j in range(n_out):
        e = d_out[j]
        for i in range(n_in):
            d_in[i] += e * WT[j, i]
    for i in range(n_in):
        a = a_in[i]
        if relu:
            d_in[i] = d_in[i] if a > 0 else d_in[i] * 0
        else:
            d_in[i] *= a * (one - a)
    for j in range(n_out):
        s = lr * d_out[j]
        for i in range(n_in):
            WT[j, i] -= s * a_in[i]
        b[j] -= s


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _epoch_sample_sgd(x, y, order, theta, sizes, w_off, b_off, a_off, hp, relu, act, delta, c):
    """Per-sample plain SGD over x[order]; returns the mean loss. Sample t's first-layer
    update (c = lr * delta_1, x[order[t]]) waits for sample t+1's forward and is flushed at
    the end, so the parameters after the epoch are the plain order's."""
    L = sizes.shape[0] - 1
    n0, n1 = sizes[0], sizes[1]
    one, lr = hp[ONE], hp[LR]
    W1T = theta[w_off[0]:w_off[0] + n0 * n1].reshape((n1, n0))
    b1 = theta[b_off[0]:b_off[0] + n1]
    a1, d1 = act[a_off[1]:a_off[1] + n1], delta[a_off[1]:a_off[1] + n1]
    n = order.shape[0]
    total = 0.0
    prev = 0
    for t in range(n):
        idx = order[t]
        _first_layer(W1T, b1, x[prev], c, x[idx], a1, t > 0, L == 1, relu, one)
        prev = idx
        for k in range(1, L):
            n_in, n_out, w, b = sizes[k], sizes[k + 1], w_off[k], b_off[k]
            _dense(theta[w:w + n_in * n_out].reshape((n_out, n_in)), theta[b:b + n_out],
                   act[a_off[k]:a_off[k] + n_in], act[a_off[k + 1]:a_off[k + 1] + n_out], k == L - 1, relu, one)
        total += _softmax_loss(act[a_off[L]:a_off[L] + sizes[L]], y[idx], delta[a_off[L]:a_off[L] + sizes[L]])
        for k in range(L - 1, 0, -1):
            n_in, n_out, w, b = sizes[k], sizes[k + 1], w_off[k], b_off[k]
            _backprop_sgd(theta[w:w + n_in * n_out].reshape((n_out, n_in)), theta[b:b + n_out],
                          delta[a_off[k + 1]:a_off[k + 1] + n_out], act[a_off[k]:a_off[k] + n_in],
                          delta[a_off[k]:a_off[k] + n_in], lr, relu, one)
        for j in range(n1):                                   # b1 now, W1 with the next forward
            c[j] = lr * d1[j]
            b1[j] -= c[j]
    if n > 0:
        for j in range(n1):
            cj = c[j]
            for i in range(n0):
                W1T[j, i] -= cj * x[prev, i]
    return total / max(n, 1)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _layer_update(theta, m, v, w, b, n_in, n_out, d_out, a_in, hp, kind, bc1, bc2):
    """theta's layer (W^T at w, b at b) takes the optimizer step for the gradient
    outer(d_out, a_in), d_out; each gradient element is used as it is produced."""
    lr, one = hp[LR], hp[ONE]
    WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
    if kind == MOMENTUM:
        mu = hp[MU]
        VT = v[w:w + n_in * n_out].reshape((n_out, n_in))
        for j in range(n_out):
            dj = d_out[j]
            for i in range(n_in):
                vi = mu * VT[j, i] + dj * a_in[i]
                VT[j, i] = vi
                WT[j, i] -= lr * vi
            vb = mu * v[b + j] + dj
            v[b + j] = vb
            theta[b + j] -= lr * vb
    else:                                                     # ADAM
        b1, b2, eps = hp[B1], hp[B2], hp[EPS]
        c1, c2 = one - b1, one - b2
        MT = m[w:w + n_in * n_out].reshape((n_out, n_in))
        VT = v[w:w + n_in * n_out].reshape((n_out, n_in))
        for j in range(n_out):
            dj = d_out[j]
            for i in range(n_in):
                g = dj * a_in[i]
                mi = b1 * MT[j, i] + c1 * g
                vi = b2 * VT[j, i] + c2 * (g * g)
                MT[j, i] = mi
                VT[j, i] = vi
                WT[j, i] -= lr * (mi / bc1) / (np.sqrt(vi / bc2) + eps)
            mb = b1 * m[b + j] + c1 * dj
            vb = b2 * v[b + j] + c2 * (dj * dj)
            m[b + j] = mb
            v[b + j] = vb
            theta[b + j] -= lr * (mb / bc1) / (np.sqrt(vb / bc2) + eps)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _epoch_sample(x, y, order, theta, sizes, w_off, b_off, a_off, hp, relu, kind,
                  m, v, state, act, delta):
    """Per-sample training with momentum or Adam over x[order]; returns the mean loss.
    state[0] counts Adam steps."""
    L = sizes.shape[0] - 1
    n0 = sizes[0]
    one = hp[ONE]
    total = 0.0
    for idx in order:
        act[0:n0] = x[idx]
        for k in range(L):
            _layer_forward(theta, w_off[k], b_off[k], sizes[k], sizes[k + 1],
                           act[a_off[k]:], act[a_off[k + 1]:], k == L - 1, relu, one)
        total += _softmax_loss(act[a_off[L]:a_off[L] + sizes[L]], y[idx], delta[a_off[L]:])
        state[0] += 1
        bc1 = one - hp[B1] ** state[0]
        bc2 = one - hp[B2] ** state[0]
        for k in range(L - 1, -1, -1):
            n_in, n_out = sizes[k], sizes[k + 1]
            if k > 0:  # before W_k changes
                _input_delta(theta, w_off[k], n_in, n_out, delta[a_off[k + 1]:], act[a_off[k]:],
                             delta[a_off[k]:], relu, one)
            _layer_update(theta, m, v, w_off[k], b_off[k], n_in, n_out, delta[a_off[k + 1]:],
                          act[a_off[k]:], hp, kind, bc1, bc2)
    return total / max(order.shape[0], 1)


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
    Compiled twice below: with prange parallel, and serial (prange is range there)."""
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
def _epoch_batch_blas(x, y, order, theta, sizes, w_off, b_off, a_off, hp, relu, kind, batch,
                      g, m, v, state, abuf, dbuf, losses):
    """Minibatch training with every layer's products in BLAS (np.dot: SciPy's OpenBLAS).
    abuf and dbuf are flat: layer k's (batch, n_k) block starts at batch * a_off[k], so each
    block is C-contiguous, as np.dot needs; W^T's transpose is an F-contiguous view."""
    L = sizes.shape[0] - 1
    n0 = sizes[0]
    one = hp[ONE]
    n = order.shape[0]
    total = 0.0
    for start in range(0, n, batch):
        nb = min(batch, n - start)
        scale = one / nb
        A0 = abuf[0:nb * n0].reshape((nb, n0))
        for r in range(nb):
            A0[r] = x[order[start + r]]
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
            total += _softmax_loss(ZL[r], y[order[start + r]], DL[r])
            for j in range(nL):
                DL[r, j] *= scale                              # the loss is a batch mean
        for k in range(L - 1, -1, -1):
            n_in, n_out, w, b = sizes[k], sizes[k + 1], w_off[k], b_off[k]
            Ain = abuf[batch * a_off[k]:batch * a_off[k] + nb * n_in].reshape((nb, n_in))
            Dout = dbuf[batch * a_off[k + 1]:batch * a_off[k + 1] + nb * n_out].reshape((nb, n_out))
            WT = theta[w:w + n_in * n_out].reshape((n_out, n_in))
            if k > 0:                                          # before this layer's W changes
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
        state[0] += 1
        _optimizer_step_inline(theta, g, m, v, hp, kind, state[0])
    return total / max(n, 1)


_epoch_batch_parallel = njit(cache=True, fastmath=_FASTMATH, error_model="numpy", parallel=True)(_variant(_epoch_batch, "_parallel"))
_epoch_batch_serial = njit(cache=True, fastmath=_FASTMATH, error_model="numpy")(_variant(_epoch_batch, "_serial"))
# Below this batch size a step is too small to share: each of its ~11 parallel regions costs a
# fork and a join, and on a loaded machine a join waits for a descheduled thread. Measured
# (docs/performance.md, "Small batches, threads and a busy machine"): at batch 1 the serial
# kernel is 2.4x faster quiet and 19x beside one busy loop; at batch 32 the parallel one is
# 1.6x faster quiet (and 2.7x slower loaded: the thread count is the harness's choice).
# Since BLAS_FROM = SERIAL_BELOW, the parallel loop kernel runs only where a caller lowers
# SERIAL_BELOW or raises BLAS_FROM (the tests and benchmarks/probe_threads.py do).
SERIAL_BELOW = 32
# From this batch size on, every layer's products go through BLAS (_epoch_batch_blas). Measured
# (docs/performance.md, "numba kernels"), 1 thread, CPU time: on hw1-q3 (batch 256,
# Adam) 1.28x numpy-batch and 1.7x the 4-row loop kernels; at batch 32 BLAS still led the serial
# loops on both nets (1.17x, 1.14x); at batch 8 the loops led (0.85x). Two threads: not yet measured.
BLAS_FROM = 32


class _NumbaBase(Implementation):
    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        dt = self.dtype
        sizes = np.array(spec.sizes, dtype=np.int64)
        self._sizes = sizes
        self._a_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        w_off, b_off, pos = [], [], 0
        for i, o in spec.layers:
            w_off.append(pos)
            b_off.append(pos + i * o)
            pos += i * o + o
        self._w_off = np.array(w_off, dtype=np.int64)
        self._b_off = np.array(b_off, dtype=np.int64)
        self.theta = np.concatenate([np.concatenate([np.ravel(np.asarray(W).T), np.ravel(b)])
                                     for W, b in params]).astype(dt)
        self._hp = np.array([self.lr, self.momentum, self.betas[0], self.betas[1], self.eps, 1.0], dtype=dt)
        self._kind = ADAM if self.optimizer == "adam" else (MOMENTUM if self.momentum > 0 else SGD)
        self._g = np.zeros_like(self.theta)
        self._m = np.zeros_like(self.theta)
        self._v = np.zeros_like(self.theta)
        self._state = np.zeros(1, dtype=np.int64)

    def _check_data(self, x, y, order):
        x = np.ascontiguousarray(x, dtype=self.dtype)
        return x, np.ascontiguousarray(y, dtype=np.int64), np.ascontiguousarray(order, dtype=np.int64)

    def get_params(self):
        return [(self.theta[w:b].reshape(o, i).T.copy(), self.theta[b:b + o].copy())
                for (i, o), w, b in zip(self.spec.layers, self._w_off, self._b_off)]

    def predict_proba(self, x):
        # Evaluation is never timed: plain numpy GEMMs on views of theta.
        a = np.asarray(x, dtype=self.dtype)
        params = self.get_params()
        for k, (W, b) in enumerate(params):
            z = a @ W + b
            if k < len(params) - 1:
                a = np.maximum(z, 0) if self.spec.activation == "relu" else 1 / (1 + np.exp(-np.clip(z, -80, 80)))
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)



class NumbaSample(_NumbaBase):
    name = "numba-sample"
    description = "per-sample training as njit loops over transposed weights; SGD fuses W1's update with the next forward"
    batch_sizes = (1,)

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        self._act = np.zeros(int(self._a_off[-1]), dtype=self.dtype)
        self._delta = np.zeros_like(self._act)
        self._c = np.zeros(spec.sizes[1], dtype=self.dtype)

    def train_epoch(self, x, y, order):
        x, y, order = self._check_data(x, y, order)
        relu = self.spec.activation == "relu"
        if self._kind == SGD:
            return float(_epoch_sample_sgd(x, y, order, self.theta, self._sizes, self._w_off, self._b_off,
                                           self._a_off, self._hp, relu, self._act, self._delta, self._c))
        return float(_epoch_sample(x, y, order, self.theta, self._sizes, self._w_off, self._b_off,
                                   self._a_off, self._hp, relu, self._kind,
                                   self._m, self._v, self._state, self._act, self._delta))


class NumbaBatch(_NumbaBase):
    name = "numba-batch"
    description = "minibatch njit loops, prange over batch rows and output units"

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        width = int(self._a_off[-1])
        self._A = np.zeros((self.batch_size, width), dtype=self.dtype)
        self._D = np.zeros_like(self._A)
        self._losses = np.zeros(self.batch_size, dtype=np.float64)

    def train_epoch(self, x, y, order):
        x, y, order = self._check_data(x, y, order)
        serial = self.batch_size < SERIAL_BELOW or numba.get_num_threads() == 1
        if self.batch_size >= BLAS_FROM:
            return float(_epoch_batch_blas(x, y, order, self.theta, self._sizes, self._w_off, self._b_off,
                                           self._a_off, self._hp, self.spec.activation == "relu", self._kind,
                                           self.batch_size, self._g, self._m, self._v, self._state,
                                           self._A.reshape(-1), self._D.reshape(-1), self._losses))
        kernel = _epoch_batch_serial if serial else _epoch_batch_parallel
        return float(kernel(x, y, order, self.theta, self._sizes, self._w_off, self._b_off,
                                  self._a_off, self._hp, self.spec.activation == "relu", self._kind,
                                  self.batch_size, self._g, self._m, self._v, self._state,
                                  self._A, self._D, self._losses))
