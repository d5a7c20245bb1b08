"""numba-sample: per-sample training as njit loops over theta (layout: impls/numba_kernels.py).

numba-sample is sequential by nature: one optimizer step per sample.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from impls.numba_kernels import (_FASTMATH, B1, B2, EPS, LR, MOMENTUM, MU, ONE, SGD, NumbaBase, _activate,
                                 _input_delta, _layer_forward, _softmax_loss)

# ---- per-sample kernels ---------------------------------------------------------------------
# Plain SGD (hw1-q4) runs _epoch_sample_sgd: the first layer's update of sample t is fused with
# sample t+1's first-layer forward (_first_layer), so W1, which lives in L2 and not in L1, is
# read and written once per sample instead of read twice and written once; the other layers
# run the generic loops. Momentum and Adam run _epoch_sample: the generic loops, each layer's
# optimizer update fused into the loop that produces its gradient (_layer_update), so no
# gradient buffer and no separate pass. Measured in docs/performance.md ("numba kernels"),
# with the family's yardstick, studies/yardsticks/numba_sample_best.py.


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


class NumbaSample(NumbaBase):
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
