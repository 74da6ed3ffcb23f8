"""One replay of a decoder layer on every batch, each batch's forward paused before every input group.

Within-layer sequential pruning (SparseGPT's ``--true-sequential``) needs each group of linears (q/k/v,
o_proj, gate/up, down_proj) pruned on inputs produced by the already-pruned groups before it. Instead of
replaying the layer once per group, every batch's forward runs in its own greenlet (a coroutine with its own
stack, switched in the calling thread) and waits in a forward pre-hook on the first linear of the next group:
once all batches have fed that group's statistic, the group is pruned and the forwards go on, the group's
linears now pruned. So each batch runs the layer once and the last group's release yields the pruned layer's
outputs. No per-model code: the only contact with the model is the hooks and the layer's own replayed call.

Greenlets rather than threads: every op runs on the caller's thread, so torch's thread pool and grad mode are the
caller's, no parked thread holds an OpenMP team (which made libgomp stop spinning, and re-creating teams cost
about 12 ms per switch), and all activations come from one malloc arena (threads' own arenas do not reuse each
other's freed memory: +0.45 GB peak RSS on the default model at 32 x 512).

Memory: every batch holds its activations up to the group it waits before, for all batches at once.
"""

from __future__ import annotations

from typing import Callable

import torch
from greenlet import greenlet
from torch import Tensor, nn

from calmix.prune.capture import LayerCalls


class _Aborted(BaseException):
    """Raised in a waiting forward when the pass is abandoned (an error elsewhere)."""


class _Forward:
    """One batch's forward in its own greenlet, run by turns with the caller."""

    def __init__(self, run: Callable[[], Tensor]) -> None:
        self.waiting_at: int | None = None  # the group this forward waits before; None before start or at end
        self.finished = False
        self.output: Tensor | None = None
        self.error: BaseException | None = None
        self._run = run
        self._glet = greenlet(self._main)  # its parent, where it switches back to, is the caller

    def _main(self) -> None:
        try:
            self.output = self._run()
        except _Aborted:
            pass
        except BaseException as e:  # handed to the caller by resume
            self.error = e
        self.finished, self.waiting_at = True, None

    def wait_before(self, group: int) -> None:
        """Called inside this forward: hand the turn back to the caller until resumed."""
        self.waiting_at = group
        self._glet.parent.switch()

    def resume(self) -> None:
        """Let the forward run until it waits before a group or ends; re-raise its error here."""
        self._glet.switch()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """End a forward that has not finished: _Aborted is raised where it waits."""
        if not self.finished and self._glet:  # falsy: never started, or already ended
            self._glet.throw(_Aborted)
        self.finished = True


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

    forwards = [_Forward(lambda b=b: captured.replay(layer, index, b)) for b in range(len(captured.hidden))]
    batch_of = {fw: b for b, fw in enumerate(forwards)}
    hooks = [lead.register_forward_pre_hook(gate(g)) for g, lead in enumerate(leaders)]
    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # grad mode is per thread, so one switch covers every forward
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
        torch.set_grad_enabled(grad)
    return [fw.output for fw in forwards]
