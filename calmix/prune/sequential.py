"""One replay of a decoder layer on every batch, each batch's forward paused before every input group.

Within-layer sequential pruning (SparseGPT's ``--true-sequential``) needs each group of linears (q/k/v,
o_proj, gate/up, down_proj) pruned on inputs produced by the already-pruned groups before it. Instead of
replaying the layer once per group, every batch's forward runs in its own thread and waits in a forward
pre-hook on the first linear of the next group: once all batches have fed that group's statistic, the
group is pruned and the forwards go on, the group's linears now pruned. So each batch runs the layer once
and the last group's release yields the pruned layer's outputs. No per-model code: the only contact with the
model is the hooks and the layer's own replayed call. The threads take turns (one runs at a time), so this
is no parallelism, and torch's grad mode, which is per thread, is switched off in each.

Memory: every batch holds its activations up to the group it waits before, for all batches at once.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from typing import Callable

import torch
from torch import Tensor, nn

from calmix.prune.capture import LayerCalls


@functools.cache
def _omp_pause() -> Callable[[], object] | None:
    """OpenMP 5's omp_pause_resource_all(omp_pause_soft) from the process's OpenMP runtime, None without one."""
    try:
        fn = ctypes.CDLL(None).omp_pause_resource_all
    except (AttributeError, OSError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return functools.partial(fn, 1)


def release_thread_pool() -> None:
    """Free the calling thread's OpenMP worker team before it parks.

    Each forward thread that runs a parallel op owns a team of OpenMP workers. While parked forwards hold
    theirs, libgomp sees more threads than cores and stops spinning between parallel regions, so the main
    thread's solve (many small ops) waits on a futex wake-up per op: measured 2x slower on 2 cores. A team
    freed here is recreated by the forward's next parallel op."""
    pause = _omp_pause()
    if pause is not None:
        pause()


class _Aborted(BaseException):
    """Raised in a waiting forward when the pass is abandoned (an error elsewhere)."""


class _Forward:
    """One batch's forward on its own thread, run by turns with the caller."""

    def __init__(self, run: Callable[[], Tensor], name: str) -> None:
        self.waiting_at: int | None = None  # the group this forward waits before; None before start or at end
        self.finished = False
        self.output: Tensor | None = None
        self.error: BaseException | None = None
        self.abort = False
        self._go, self._back = threading.Semaphore(0), threading.Semaphore(0)
        self._thread = threading.Thread(target=self._main, args=(run,), name=name, daemon=True)
        self._thread.start()

    def _main(self, run: Callable[[], Tensor]) -> None:
        self._go.acquire()
        try:
            if not self.abort:
                with torch.no_grad():
                    self.output = run()
        except BaseException as e:  # handed to the caller's thread by resume
            self.error = e
        self.finished, self.waiting_at = True, None
        self._back.release()

    def wait_before(self, group: int) -> None:
        """Called on this forward's thread: hand the turn back and wait until resumed."""
        self.waiting_at = group
        release_thread_pool()
        self._back.release()
        self._go.acquire()
        if self.abort:
            raise _Aborted

    def resume(self) -> None:
        """Let the forward run until it waits before a group or ends; re-raise its error here."""
        release_thread_pool()  # the caller's team too: one team at a time, as many threads as cores
        self._go.release()
        self._back.acquire()
        if self.error is not None and not isinstance(self.error, _Aborted):
            raise self.error

    def stop(self) -> None:
        """End the thread; a forward that has not finished raises _Aborted where it waits."""
        if not self.finished:
            self.abort = True
            self._go.release()
        self._thread.join()


def replay_group_by_group(layer: nn.Module, index: int, captured: LayerCalls, leaders: list[nn.Module],
                          feed: Callable[[int, Tensor, int], None], prune: Callable[[int], None],
                          on_batch: Callable[[int | None], None] = lambda b: None) -> list[Tensor]:
    """Replay layer `index` once on every captured batch; before leaders[g] runs, call feed(g, its input,
    batch), and once every batch has been fed (or finished without calling it), prune(g); the groups are
    pruned in the order the forwards reach them. Groups never reached are pruned at the end. on_batch(b) is
    told which batch runs (None: none). Return the layer's output per batch."""
    pruned = [False] * len(leaders)
    running: list[_Forward | None] = [None]

    def gate(g: int):
        def pre_hook(_mod, args):
            if pruned[g]:
                return
            feed(g, args[0], batch_of[running[0]])
            running[0].wait_before(g)
        return pre_hook

    forwards = [_Forward(lambda b=b: captured.replay(layer, index, b), f"calmix-prune-layer{index}-batch{b}")
                for b in range(len(captured.hidden))]
    batch_of = {fw: b for b, fw in enumerate(forwards)}
    hooks = [lead.register_forward_pre_hook(gate(g)) for g, lead in enumerate(leaders)]
    try:
        while True:
            for b, fw in enumerate(forwards):
                while not fw.finished and (fw.waiting_at is None or pruned[fw.waiting_at]):
                    running[0] = fw
                    on_batch(b)
                    fw.resume()
                    running[0] = None
                    on_batch(None)
            waiting = [fw.waiting_at for fw in forwards if not fw.finished]
            if not waiting:
                break
            g = min(waiting)  # the earliest group some forward waits before; every forward has passed it
            prune(g)
            pruned[g] = True
        for g in range(len(leaders)):
            if not pruned[g]:
                prune(g)
                pruned[g] = True
    finally:
        for h in hooks:
            h.remove()
        for fw in forwards:
            fw.stop()
    return [fw.output for fw in forwards]
