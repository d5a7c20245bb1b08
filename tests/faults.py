"""Fault injection for the tests, reachable only from the environment: bench workers call one of
these when ``BPB_FAULT=tests.faults:NAME`` is set (``benchmarks/workers.py``); in-process tests
call them directly. Each breaks one implementation class for the life of the process, or
makes a worker wait for, or tell, the test that started it."""
import numpy as np

import impls


def nan_loss_numpy_batch():
    """numpy-batch trains correctly for one batch (so it passes the parity check), but any
    longer pass reports a NaN loss: a cell that diverges while it is timed."""
    cls = impls.get("numpy-batch")
    original = cls.train_epoch

    def train_epoch(self, x, y, order):
        loss = original(self, x, y, order)
        return float("nan") if len(order) > self.batch_size else loss
    cls.train_epoch = train_epoch


def raise_in_torch_cpu():
    """torch-cpu raises in training (a crashing cell)."""
    cls = impls.get("torch-cpu")

    def boom(self, x, y, order):
        raise RuntimeError("injected failure in torch-cpu")
    cls.train_epoch = boom


def _overshoot_numba_batch(factor: float, when=lambda net: True):
    """numba-batch's update comes out ``1 + factor`` times too large whenever ``when(net)``."""
    cls = impls.get("numba-batch")
    original = cls.train_epoch

    def train_epoch(self, x, y, order):
        before = self.theta.copy()
        loss = original(self, x, y, order)
        if when(self):
            self.theta += self.theta.dtype.type(factor) * (self.theta - before)
        return loss
    cls.train_epoch = train_epoch


def wrong_gradient_numba_batch():
    """numba-batch's update is 10% too large: the one-step parity check must refuse to time it."""
    _overshoot_numba_batch(0.1)


def nan_loss_and_raise():
    nan_loss_numpy_batch()
    raise_in_torch_cpu()
    wrong_gradient_numba_batch()


def fixture_faults():
    """The report fixture's mix: torch-cpu raises in float64, numba-batch's update is wrong at
    batch 32 (caught by the parity check); everything else runs normally."""
    torch_cls = impls.get("torch-cpu")
    torch_train = torch_cls.train_epoch

    def torch_epoch(self, x, y, order):
        if self.dtype == np.float64:
            raise RuntimeError("injected failure in torch-cpu (float64)")
        return torch_train(self, x, y, order)
    torch_cls.train_epoch = torch_epoch
    _overshoot_numba_batch(0.1, when=lambda net: net.batch_size == 32)


def lr_schedule_bug_numpy_batch():
    """numpy-batch's learning rate drops to a fifth after its first step: the one-step parity
    check still passes, only the accuracy gate can see it."""
    cls = impls.get("numpy-batch")
    original = cls.__init__

    def __init__(self, *args, **kw):
        original(self, *args, **kw)
        step = self._opt.step
        calls = [0]

        def slowed_step(arrays, grads):
            calls[0] += 1
            if calls[0] == 2:
                self._opt.lr *= 0.2
            step(arrays, grads)
        self._opt.step = slowed_step
    cls.__init__ = __init__


def float32_bug_numba_batch():
    """numba-batch's float32 update is 1% too large; float64 is untouched."""
    _overshoot_numba_batch(0.01, when=lambda net: net.dtype == np.float32)


def lr_schedule_bug_numpy_batch_and_float32_bug_numba_batch():
    """Both of the above, for one gate session that catches each (tests/test_gate.py)."""
    lr_schedule_bug_numpy_batch()
    float32_bug_numba_batch()


def _slow_numpy_batch(factor: float):
    """numpy-batch takes ``factor`` times as long: after each epoch it sleeps (factor - 1) times
    the time it trained."""
    import time
    cls = impls.get("numpy-batch")
    original = cls.train_epoch

    def train_epoch(self, x, y, order):
        t0 = time.perf_counter()
        loss = original(self, x, y, order)
        time.sleep((factor - 1) * (time.perf_counter() - t0))
        return loss
    cls.train_epoch = train_epoch


def slow_numpy_batch_3x():
    _slow_numpy_batch(3.0)


def slow_numpy_batch_1_5x():
    """The A/A calibration's check (docs/performance.md): a slowdown of 1.5x, which a calibrated
    cut must flag on numpy-batch's cells and nowhere else."""
    _slow_numpy_batch(1.5)


def die_in_numpy_batch():
    """numpy-batch's process dies outright (as the OOM killer would) on its first long pass,
    after the parity step: the worker vanishes in the middle of a cell."""
    import os
    cls = impls.get("numpy-batch")
    original = cls.train_epoch

    def train_epoch(self, x, y, order):
        if len(order) > 4 * self.batch_size:
            os._exit(9)
        return original(self, x, y, order)
    cls.train_epoch = train_epoch


RELEASE_ENV = "BPB_TEST_RELEASE"       # a file: the silent worker waits until it exists
MARKS_ENV = "BPB_TEST_SYNC_MARKS"      # a folder: the worker marks each sync request in it
GUARD_SECONDS = 120                    # a test that never releases its worker fails, not hangs


def silent_until_released():
    """A worker that says nothing before its first cell until the file ``$BPB_TEST_RELEASE``
    exists (the heartbeat's test: its recorder makes the file after the beats it expects)."""
    import os
    import time
    release = os.environ[RELEASE_ENV]
    deadline = time.monotonic() + GUARD_SECONDS
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)


def marks_each_sync():
    """The worker's recorder writes ``$BPB_TEST_SYNC_MARKS/<n>`` as it sends its n-th sync
    request, after its wait's clock started (benchmarks/workers.py ``PipeRecorder.sync``): the
    kinds of the messages it sent since the sync before (``open log log``, ...). The main
    process then knows that the worker has reached its sync point, and what it did before."""
    import os
    from pathlib import Path
    from benchmarks import workers
    folder = Path(os.environ[MARKS_ENV])

    class Marking:
        def __init__(self, conn):
            self.conn, self.syncs, self.sent = conn, 0, []

        def send(self, message):
            if message == ("sync",):
                self.syncs += 1
                (folder / "next").write_text(" ".join(self.sent))
                (folder / "next").rename(folder / str(self.syncs))      # seen whole or not at all
                self.sent = []
            else:
                self.sent.append(message[0])
            self.conn.send(message)

        def recv(self):
            return self.conn.recv()
    init = workers.PipeRecorder.__init__
    workers.PipeRecorder.__init__ = lambda self, conn: init(self, Marking(conn))


def stop_in_numpy_batch():
    """numpy-batch's worker stops itself (SIGSTOP) on its first long pass, as a debugger or a
    stray ``kill -STOP`` would: it never sends another message."""
    import os
    import signal
    cls = impls.get("numpy-batch")
    original = cls.train_epoch

    def train_epoch(self, x, y, order):
        if len(order) > 4 * self.batch_size:
            os.kill(os.getpid(), signal.SIGSTOP)
        return original(self, x, y, order)
    cls.train_epoch = train_epoch


def kill_a_rank_of_two():
    """torch-ddp at world size 2: before the second timed epoch of the first instance to reach
    one, one of its ranks is killed (SIGKILL), as the machine's OOM killer would; a real
    RankFailed follows, once."""
    import os
    import signal
    import weakref
    cls = impls.get("torch-ddp")
    original = cls.train_epoch
    calls = weakref.WeakKeyDictionary()
    done = []

    def train_epoch(self, x, y, order):
        if self.world_size == 2 and not done:
            calls[self] = calls.get(self, 0) + 1
            if calls[self] == 3:          # its first call, its first round, then this one
                done.append(True)
                os.kill(self.rank_pids()[1], signal.SIGKILL)
        return original(self, x, y, order)
    cls.train_epoch = train_epoch
