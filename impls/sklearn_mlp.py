"""sklearn-mlp: scikit-learn's MLPClassifier behind the contract, a peer rather than a family.

Trained as a user would train it, with ``partial_fit`` (one call per epoch), from the
contract's initial weights, ``alpha=0``, the same batch size and the same optimizer
(``solver="sgd"`` with ``learning_rate="constant"`` and Nesterov off, or ``solver="adam"`` with
the same betas, eps and lr). How it is made to follow the contract:

- Initial weights: sklearn draws its own on the first ``partial_fit``. The constructor makes
  that first call on one all-zero sample (it sets the label binarizer, the output activation
  and the layer count), then replaces ``coefs_``/``intercepts_`` with the contract's params and
  deletes the optimizer that call created, so the first real epoch starts a fresh one at t=0
  (``_fit_stochastic`` makes a new optimizer when ``_optimizer`` is missing).
- Sample order: ``shuffle=False``, and the epoch's rows are passed already in ``order``: sklearn
  then cuts consecutive batches, as the harness's other implementations do.
- dtype: sklearn computes in the dtype of ``X`` (float32 or float64, it accepts both) and of
  ``coefs_``, which are given in the run's dtype; ``get_params`` checks it stayed so.

Where the math is the same as impls/numpy_batch.py: forward (``logistic`` is the sigmoid),
softmax output, delta = p - onehot, gradients averaged over the batch, plain and momentum SGD
(sklearn's ``v = mu*v - lr*g; p += v`` is PyTorch's ``v = mu*v + g; p -= lr*v`` times -lr,
identical for a constant lr). Where it differs:

- Adam: sklearn folds both bias corrections into the step size,
  ``lr_t = lr*sqrt(1-b2^t)/(1-b1^t); p -= lr_t*m/(sqrt(v)+eps)``, which is impls/optim.py's
  formula with ``eps`` replaced by ``eps*sqrt(1-b2^t)`` (3.2e-10 instead of 1e-8 at t=1): the
  same where sqrt(v) >> eps, and a larger step for parameters whose gradients are near 1e-8.
- The loss it reports clips probabilities to [eps, 1-eps] of the dtype before the log (the
  reference uses log-softmax): the same unless a sample's probability falls below ~1e-7
  (float32) or ~2e-16 (float64). The gradient is not clipped.
- It computes the L2 penalty's sum of squares every batch even at alpha=0 (time, not math),
  validates the whole epoch's X on each call, and copies ``x[order]`` each epoch.
Parity: ``parity_reference`` is the float64 reference sklearn-mlp is held to, by the harness's
pre-timing check (benchmarks/runner.py) and by tests/test_conformance.py: the oracle's
``train_epoch`` (impls/oracle.py) for SGD, the same loop with sklearn's Adam step for Adam.
tests/test_peers.py checks what holds against the project's Adam (loss and accuracy).
"""
from __future__ import annotations

import warnings

import numpy as np

from impls.base import ConfigError, Implementation


class SklearnMLP(Implementation):
    name = "sklearn-mlp"
    description = "scikit-learn MLPClassifier.partial_fit (a peer: what a user would pick instead)"
    family = "peer"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None where scikit-learn imports; its ImportError is the reason (impls.available_reason)."""
        import sklearn.neural_network  # noqa: F401
        return None

    def __init__(self, spec, params, **config):
        super().__init__(spec, params, **config)
        if spec.sizes[-1] < 3:
            raise ConfigError("sklearn-mlp needs at least 3 classes: with 2, MLPClassifier's output is one "
                              "logistic unit, not a softmax")
        from sklearn.neural_network import MLPClassifier
        adam = self.optimizer == "adam"
        self._clf = MLPClassifier(
            hidden_layer_sizes=spec.sizes[1:-1], activation="logistic" if spec.activation == "sigmoid" else "relu",
            solver="adam" if adam else "sgd", alpha=0.0, batch_size=self.batch_size, learning_rate="constant",
            learning_rate_init=self.lr, momentum=self.momentum, nesterovs_momentum=False,
            beta_1=self.betas[0], beta_2=self.betas[1], epsilon=self.eps, shuffle=False,
            tol=0.0, n_iter_no_change=2 ** 31 - 1, early_stopping=False)
        n_classes = spec.sizes[-1]
        # sklearn's own initialisation, on one zero sample; every weight is replaced below
        with warnings.catch_warnings():     # "batch_size larger than sample size": clipped
            warnings.simplefilter("ignore", UserWarning)
            self._clf.partial_fit(np.zeros((1, spec.sizes[0]), dtype=self.dtype), np.zeros(1, dtype=np.int64),
                                  classes=np.arange(n_classes))
        self._clf.coefs_ = [np.array(W, dtype=self.dtype) for W, _ in params]
        self._clf.intercepts_ = [np.array(b, dtype=self.dtype) for _, b in params]
        del self._clf._optimizer      # a fresh optimizer (t=0, zero moments) on the first epoch
        self._classes = np.arange(n_classes)

    def train_epoch(self, x, y, order):
        order = np.asarray(order)
        if len(order) == 0:
            return 0.0
        xs = np.asarray(x, dtype=self.dtype)[order]
        ys = np.asarray(y)[order]
        with warnings.catch_warnings():     # batch_size > n_samples: sklearn clips it, as we do
            warnings.simplefilter("ignore", UserWarning)
            self._clf.partial_fit(xs, ys)
        return float(self._clf.loss_)

    def predict_proba(self, x):
        return self._clf.predict_proba(np.asarray(x, dtype=self.dtype))

    def get_params(self):
        out = [(W.copy(), b.copy()) for W, b in zip(self._clf.coefs_, self._clf.intercepts_)]
        assert all(W.dtype == self.dtype for W, _ in out), "sklearn changed the parameters' dtype"
        return out

    def details(self):
        import sklearn
        return {"sklearn_version": sklearn.__version__, "sklearn_solver": self._clf.solver}


def parity_reference(spec, params, x, y, order, *, lr, batch_size=1, optimizer="sgd", momentum=0.0,
                     betas=(0.9, 0.999), eps=1e-8):
    """The float64 reference sklearn-mlp's math follows: ``oracle.train_epoch`` for SGD (the same
    formulas), and for Adam the same loop with sklearn's step (impls/optim.py's Adam with eps
    scaled by sqrt(1 - b2^t): the bias corrections folded into the step size). Returns
    (params, mean loss) like ``oracle.train_epoch``."""
    from impls import oracle
    if optimizer != "adam":
        return oracle.train_epoch(spec, params, x, y, order, lr=lr, batch_size=batch_size, optimizer=optimizer,
                                  momentum=momentum, betas=betas, eps=eps)
    params = [(np.array(W, dtype=np.float64), np.array(b, dtype=np.float64)) for W, b in params]
    flat = [a for pair in params for a in pair]
    m = [np.zeros_like(a) for a in flat]
    v = [np.zeros_like(a) for a in flat]
    b1, b2 = betas
    x, order = np.asarray(x, dtype=np.float64), np.asarray(order)
    total = 0.0
    for t, start in enumerate(range(0, len(order), batch_size), start=1):
        idx = order[start:start + batch_size]
        loss, grads = oracle.mean_loss_and_gradients(params, x[idx], y[idx], spec.activation)
        total += loss * len(idx)
        step = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for p, g, mk, vk in zip(flat, [g for pair in grads for g in pair], m, v):
            mk *= b1
            mk += (1 - b1) * g
            vk *= b2
            vk += (1 - b2) * g * g
            p -= step * mk / (np.sqrt(vk) + eps)
    return params, total / max(len(order), 1)


SklearnMLP.parity_reference = staticmethod(parity_reference)
