"""CUDA graphs for the child networks: the one module that owns graph capture.

On a GPU an ENAS child step is bound by the CPU launching ~1,000 small kernels, not by the GPU
(``shared/device/README.md``). A CUDA graph replays a recorded sequence of kernels with one
launch. This module records the parts of a network whose work never changes:

* :func:`graph_supernet` wraps every module of a supernet that holds no choice and takes one
  tensor (each candidate op, reductions, stems, calibrations, BN merges, the classifier); only
  the routing between them stays in Python. A fixed network (no choices at all: retraining) is
  one such module, so the same call graphs it whole: forward and backward of the training step
  and the test-set forward.
* :class:`CudaGraphModule` is the wrapper. It captures lazily, on its module's first CUDA call
  of each kind:

  - a *training graph* (forward + backward, :func:`torch.cuda.make_graphed_callables`) for
    grad-enabled calls in training mode (child steps, retraining steps);
  - an *inference graph* (forward under ``no_grad``, :class:`torch.cuda.graph`) for no-grad
    calls, one per training flag: macro rewards use eval-mode BN, micro rewards training-mode
    BN (TF's micro search), the test set eval mode.

  No-grad calls under ``torch.inference_mode`` (``trainer.validate``/``test``) get their own
  inference graphs: Lightning's validation *during a fit* runs under ``no_grad`` only
  (``training_epoch_loop``'s ``_EvaluationLoop(..., inference_mode=False)``, Lightning 2.6).

  Calls it cannot serve run the module eagerly: another shape, dtype, device, layout or
  ``requires_grad`` than the captured one (a last partial batch), another autocast state,
  parameters whose ``requires_grad`` changed, parts of the module in another training mode
  than the module itself (a frozen BN), keyword or non-tensor arguments, grad-enabled calls in
  eval mode, CPU tensors.

Which modules (the finder, :func:`graphable_modules`): walking down from the root, a module is
wrapped whole when (1) nothing inside it is a choice or a supernet module (``LayerChoice``,
``InputChoice``, NNI's ``BaseSuperNetModule`` family, which includes ``PathSamplingLayer``,
``PathSamplingInput`` and our ``PathSamplingAnyInput``), (2) it has parameters, and (3) its
``forward`` takes exactly one argument that may be a tensor. Otherwise the walk goes into its
children. Rule (2) leaves Identity, ReLU, Dropout and bare pools eager: one or two kernels each
way, no fewer as a graph (a replay also copies its input into the static buffer). Rule (3)
leaves out micro's ``LooseEndMerge(states, loose)``, whose weight slice depends on the sample,
but still graphs the BN inside it.

Hazards, and how each is handled
--------------------------------
Static outputs
    A graph writes its outputs into the same buffers at every replay. Training graphs return
    those buffers (``make_graphed_callables`` returns detached aliases, not copies): the child
    step's forward consumes them before the module replays again, because each module runs at
    most once per supernet forward and the backward comes before the next forward. Inference
    graphs return clones (one copy kernel): a caller may keep logits of several forwards
    (batched rewards) and inference graphs share one memory pool (below).
The same module twice in one forward
    The spaces never do it (each op slot, reduction and merge is its own module; micro shares
    labels between cells, not modules), but a user space might. A replay inside the same
    supernet forward would overwrite the activations the first call's backward needs, so
    :func:`graph_supernet` counts supernet forwards (a pre-hook on the root) and a second call
    of one module within a forward runs eagerly.
Two grad-enabled forwards before their backwards
    (``loss = f(a) + f(b)``) would give the first forward the second one's saved activations.
    The wrapper keeps a weak reference to the backward node of its last training replay; while
    that node lives and its backward has not run, calls run eagerly. (A forward whose output is
    kept alive without a backward keeps the module eager until it is freed: slow, not wrong.)
Gradients
    ``make_graphed_callables``' backward returns its static gradient buffers (``b.detach()``),
    and autograd's ``AccumulateGrad`` keeps such a buffer as ``param.grad`` when ``.grad`` is
    ``None``. Were ``.grad`` still set at the next graphed backward (``accumulate_grad_batches``,
    ``zero_grad(set_to_none=False)``), the replay would overwrite it before autograd adds the
    new gradient to it: twice the new gradient, silently. A pre-hook on each replay's backward
    node therefore gives such gradients their own storage first (a no-op with
    ``set_to_none=True``, which Lightning's automatic optimization and NNI's
    ``advance_optimization`` use, zeroing between the forward and the backward).
Parameters and buffers
    The graphs read them in place. If their storage moves after capture (``.to()``,
    ``.data = ...``, ``load_state_dict(assign=True)``) every graph of the wrapper's
    :func:`graph_supernet` call is dropped and captured again at its next call (re-armed).
    Lightning moves the model to the CPU at the end of every ``fit``/``validate``/``test`` and
    back at the next one, with new storage; it also frees cuBLAS's workspaces, which captured
    matrix products use. So :class:`~nni_enas.training.classification.ChildTraining` and
    :class:`~nni_enas.search.enas.EnasModule` drop the graphs in their ``teardown``
    (:func:`release_graphs`), and the next ``fit``/``validate``/``test`` captures afresh.
Memory pools
    Graphs that share a pool may reuse each other's freed capture memory, which PyTorch only
    allows when they replay in capture order. Supernet modules replay in an order set by the
    sampled architecture, so each training graph keeps its own pool (forward and backward
    share it). Inference graphs share one pool per :func:`graph_supernet` call: their only
    live pool memory is the static output, cloned right after each replay (stream-ordered).
BN running statistics
    The warm-up runs before a capture update running mean/var (and ``num_batches_tracked``).
    They are saved before and copied back in place after the capture, so the first real call
    (a replay) updates them once, exactly as an eager call would.
Randomness
    PyTorch records the Philox offset increments of a capture and advances the default CUDA
    generator's offset by that total at every replay (ATen's note "CUDA Graph-safe RNG
    states"), so dropout and drop path draw fresh masks per replay. Only the default generator
    may be used inside a graph: the spaces use no other. A drop-path
    *probability* must be a device tensor the graph reads (micro's ``Cell.drop_prob`` buffer,
    updated with ``fill_``), never a Python float frozen at capture.
Autocast
    ``make_graphed_callables`` refuses autocast's weight cache. Graphs are captured inside a
    nested ``torch.autocast(..., cache_enabled=False)`` with the caller's dtype (Lightning's
    ``bf16-mixed``/``16-mixed`` already use ``cache_enabled=False``), and the autocast state is
    part of the key: a call under another state runs eagerly.
Failures
    An exception during capture raises :class:`CudaGraphCaptureError`, whose one line says to
    rerun with ``--cuda-graphs off``. Running on eagerly is not safe: on torch < 2.13 a capture
    that fails inside the captured region leaves the default CUDA generator and the caching
    allocator in capture state (``CUDAGraph::capture_end`` throws before its epilogue), so the
    next eager random op, every replay of graphs already captured and the next
    ``empty_cache`` fail later with unrelated errors (``shared/device/REVIEW.md``, finding 2).
    Before raising, the caller's CUDA stream is restored (``torch.cuda.graph`` does not restore
    it when ``capture_end`` raises) and the module is marked ``broken`` (eager from then on, and
    no other module of its :func:`graph_supernet` call starts a capture), for a caller that
    catches the error anyway.
Garbage collection
    ``make_graphed_callables`` keeps its graphs in closures of a class, a reference cycle: a
    dropped graph is freed only by the cyclic garbage collector. A collection *during* a capture
    could destroy such a graph mid-capture ("operation not permitted when stream is
    capturing"; torch >= 2.9 no longer collects before each capture), so collection is off
    during every capture, and runs once before a graph set's first capture and once after its
    graphs are dropped (which also returns their memory).
Capture cost
    Each capture synchronises the device, empties the allocator's cache and runs three
    warm-up iterations (on the capture's own stream, as ``make_graphed_callables`` does): a few
    seconds in all, once, spread over the first steps that use each module.
Per-call checks
    Every call compares the storage addresses of the module's parameters and buffers, and the
    training flags of its parts, with the capture's: about 0.3 us per tensor on the 2-core
    dev machine (0.4 ms for a whole paper-size micro network, a few us per supernet module).
Data parallelism
    Not handled here: the retraining recipe turns graphs off under DDP (see
    :class:`~nni_enas.training.classification.ChildTraining`).
Copies of a wrapped module
    The wrapper replaces the module's ``forward`` attribute, not the module, so parameter
    names, checkpoints, ``isinstance`` checks and exports are unchanged. ``copy.deepcopy`` of
    a wrapped module (NNI's ``freeze``) gets a fresh wrapper with no graphs.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import inspect
import operator
import weakref
from typing import Any, Callable

import torch
import torch.nn as nn
from nni.nas.nn.pytorch import InputChoice, LayerChoice
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from torch.utils._pytree import tree_map

__all__ = ['use_cuda_graphs', 'graph_supernet', 'graphable_modules', 'release_graphs', 'graph_wrappers',
           'CudaGraphModule', 'CudaGraphCaptureError', 'MODES']

MODES = ('auto', 'off')
WARMUP_ITERS = 3
# Everything a choice can be, before and after NNI's mutation into a supernet.
_ROUTING = (LayerChoice, InputChoice, BaseSuperNetModule)


class CudaGraphCaptureError(RuntimeError):
    """A CUDA graph capture failed; the process's CUDA state may be unusable: rerun without graphs."""


def use_cuda_graphs(mode: str, device) -> bool:
    """Whether ``mode`` ('auto' or 'off') turns CUDA graphs on for ``device``: 'auto' on CUDA only."""
    if mode not in MODES:
        raise ValueError(f'cuda_graphs must be one of {", ".join(MODES)}, got {mode!r}')
    return mode == 'auto' and device is not None and torch.device(device).type == 'cuda'


# --------------------------------------------------------------------------------------------
# which modules
# --------------------------------------------------------------------------------------------

def _holds_choice(module: nn.Module) -> bool:
    return any(isinstance(m, _ROUTING) for m in module.modules())


def _takes_one_tensor(module: nn.Module) -> bool:
    """``forward`` has exactly one required argument, not annotated as a container or a number."""
    forward = type(module).forward
    if forward is nn.Module.forward or getattr(forward, '__name__', '') == '_forward_unimplemented':
        return False      # ModuleList, ModuleDict
    try:
        params = list(inspect.signature(forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return False
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return False
    required = [p for p in params if p.default is p.empty]
    if len(required) != 1 or len(params) != 1:
        return False
    annotation = required[0].annotation
    if annotation is inspect.Parameter.empty:
        return True
    text = annotation if isinstance(annotation, str) else getattr(annotation, '__name__', str(annotation))
    return 'Tensor' in text and not any(w in text.lower() for w in ('list', 'tuple', 'dict', 'sequence'))


def graphable_modules(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """The maximal choice-free modules with parameters and one tensor argument, in module order.

    A network without choices returns ``[('', network)]`` (the root, graphed whole).
    """
    found: list[tuple[str, nn.Module]] = []

    def visit(name: str, module: nn.Module) -> None:
        if isinstance(module.__dict__.get('forward'), CudaGraphModule):
            found.append((name, module))          # wrapped already: keep it, do not wrap inside it
            return
        if isinstance(module, _ROUTING):
            # a choice's candidates are choice-free children; the choice itself routes
            for child_name, child in module.named_children():
                visit(f'{name}.{child_name}' if name else child_name, child)
            return
        if not _holds_choice(module) and next(module.parameters(), None) is not None and _takes_one_tensor(module):
            found.append((name, module))
            return
        for child_name, child in module.named_children():
            visit(f'{name}.{child_name}' if name else child_name, child)

    visit('', network)
    return found


# --------------------------------------------------------------------------------------------
# the wrapper
# --------------------------------------------------------------------------------------------

class _GraphSet:
    """What the wrappers of one :func:`graph_supernet` call share."""

    def __init__(self, track_forwards: bool):
        self.inference_pool = None          # created at the first inference capture (needs CUDA)
        # after a failed capture nothing new is captured (see CudaGraphCaptureError)
        self.capture_failed = False
        self.track_forwards = track_forwards
        self.forward_id = 0
        self.members: list[CudaGraphModule] = []     # every wrapper of the set (they add themselves)
        self.collected = False              # the one garbage collection before the first capture

    def __deepcopy__(self, memo):
        # a copy starts without graphs; the copied wrappers add themselves (CudaGraphModule.__deepcopy__)
        twin = memo[id(self)] = _GraphSet(self.track_forwards)
        return twin

    def next_forward(self, *_) -> None:
        self.forward_id += 1

    def release(self) -> int:
        """Drop every graph of every member (each recaptures at its next call); how many were dropped."""
        dropped = sum([member.drop_graphs() for member in self.members])
        # a fresh pool: the old one may still be held by graphs that the collection below frees
        self.inference_pool = None
        if dropped:
            gc.collect()        # the graphs live in reference cycles (see "Garbage collection")
        return dropped


@contextlib.contextmanager
def _no_collection():
    """No cyclic garbage collection in this block (a capture: see "Garbage collection")."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _autocast_state() -> tuple[bool, torch.dtype | None]:
    if torch.is_autocast_enabled('cuda'):
        return True, torch.get_autocast_dtype('cuda')
    return False, None


def _autocast(state: tuple[bool, torch.dtype | None]):
    enabled, dtype = state
    # make_graphed_callables refuses the autocast weight cache (stale casts would be captured)
    return torch.autocast('cuda', dtype=dtype, cache_enabled=False) if enabled else contextlib.nullcontext()


# Only this thread's CUDA calls may break a capture (not, e.g., a data loader's pin-memory thread);
# make_graphed_callables takes the argument in recent PyTorch releases only.
_CAPTURE_MODE = ({'capture_error_mode': 'thread_local'}
                 if 'capture_error_mode' in inspect.signature(torch.cuda.make_graphed_callables).parameters else {})


_TRAINING = operator.attrgetter('training')
_REQUIRES_GRAD = operator.attrgetter('requires_grad')


def _signature(args: tuple[torch.Tensor, ...]) -> tuple:
    return tuple((a.shape, a.dtype, a.device, a.stride(), a.requires_grad) for a in args)


class CudaGraphModule:
    """Run ``module`` as CUDA graphs captured on first use; becomes ``module.forward``.

    Parameters
    ----------
    module
        A module without choices whose ``forward`` takes tensors. The wrapper installs itself
        as ``module.forward`` (see :func:`graph_supernet`); its parameters and buffers are
        untouched; if they get new storage, the graphs are captured again (re-armed).
    name
        The module's qualified name, for the error when a capture fails.

    See the module docstring for the graph kinds and the hazards they handle.
    """

    def __init__(self, module: nn.Module, *, name: str = '', graph_set: _GraphSet | None = None):
        self.module = module
        self.name = name
        self.graph_set = graph_set or _GraphSet(track_forwards=False)
        self.eager = module.forward            # the bound forward it replaces
        self.broken = False                    # a capture failed: eager for good
        self.graphs: dict[Any, tuple[tuple, Callable]] = {}    # kind -> (key, replay function)
        self.last_forward: dict[Any, int] = {}
        # for tests and benchmarks: calls served by a graph, captures made, the kinds ever
        # captured, and how many times the graphs were dropped to be captured again
        self.replays = 0
        self.captures = 0
        self.captured_kinds: set = set()
        self.recaptures = 0
        self.graph_set.members.append(self)
        # Set at the first capture: what the graphs read in place, and the module's parts whose
        # training flags must agree with the root's (see _module_state).
        self._tensors: list[torch.Tensor] | None = None
        self._pointers: list[int] = []
        self._submodules: list[nn.Module] = []
        self._params: list[nn.Parameter] = []
        self._awaiting: Callable | None = None   # weak reference to the last training replay's backward node

    def __deepcopy__(self, memo):
        # the copied supernet's forward-counting hook holds the copied graph set (same memo)
        return type(self)(copy.deepcopy(self.module, memo), name=self.name,
                          graph_set=copy.deepcopy(self.graph_set, memo))

    def __call__(self, *args, **kwargs):
        if kwargs or not args or self.broken or not all(torch.is_tensor(a) for a in args) \
                or not self._on_device(args):
            return self.eager(*args, **kwargs)
        grad = torch.is_grad_enabled()
        training = self.module.training
        if grad and not training:
            return self.eager(*args)
        # Inference mode is part of the kind, not only of the key: trainer.validate/test run under
        # inference_mode, fit-time validation, rewards and exports under no_grad; each gets its
        # own graph (inference tensors refuse in-place copies outside inference mode).
        kind = 'train' if grad else ('infer', training, torch.is_inference_mode_enabled())
        if self._tensors is not None and not self._state_ok(training):
            return self.eager(*args)
        key = (_autocast_state(), _signature(args), self._grad_flags() if grad else None)
        entry = self.graphs.get(kind)
        if entry is None:
            if self.graph_set.capture_failed or not self._uniform(training):
                return self.eager(*args)          # no new captures after a failure; a part in another mode
            entry = self.graphs[kind] = (key, self._capture_or_stop(kind, args, key[0]))
        if entry[0] != key:
            return self.eager(*args)
        if kind == 'train' and self._awaiting is not None and self._awaiting() is not None:
            # the last replay's backward has not run yet (two forwards, then their backwards):
            # a replay now would overwrite the activations that backward reads
            return self.eager(*args)
        if self.graph_set.track_forwards:
            if self.last_forward.get(kind) == self.graph_set.forward_id:
                return self.eager(*args)          # second call within one supernet forward
            self.last_forward[kind] = self.graph_set.forward_id
        self.replays += 1
        out = entry[1](*args)
        if kind == 'train':
            self._watch_backward(out)
            return out
        # inference graphs hand back their static outputs: copy them before the next replay
        if torch.is_tensor(out):
            return out.clone()
        return tree_map(lambda t: t.clone() if torch.is_tensor(t) else t, out)

    # -- what the graphs assume about the module ------------------------------------------------

    def _remember(self) -> None:
        """At the first capture: the tensors the graphs read in place, the parts, the parameters."""
        module = self.module
        self._params = list(module.parameters())
        self._tensors = self._params + list(module.buffers())
        self._pointers = [t.data_ptr() for t in self._tensors]
        # only parts whose forward depends on the flag need to agree (BN, dropout, ...), but
        # checking all of them is cheap and needs no list of such classes
        self._submodules = [m for m in module.modules() if m is not module]

    # map() with attrgetter: these run on every call, over hundreds of tensors for a whole network
    def _uniform(self, training: bool) -> bool:
        flags = map(_TRAINING, self._submodules or self.module.modules())
        return all(flags) if training else not any(flags)

    def _grad_flags(self) -> tuple[bool, ...]:
        return tuple(map(_REQUIRES_GRAD, self._params or self.module.parameters()))

    def _state_ok(self, training: bool) -> bool:
        """False (run eagerly) when the module is not in the state its graphs were captured for.

        Parameters or buffers whose storage moved (``.to()``, ``.data = ...``, a ``load_state_dict``
        with ``assign=True``, Lightning's move to the CPU and back) make the graphs stale: those
        of the whole graph set are dropped and this call captures afresh. Parts in another
        training mode than the root (a frozen BN) run eagerly for that call.
        """
        if list(map(torch.Tensor.data_ptr, self._tensors)) != self._pointers:
            self.graph_set.release()
        return self._uniform(training)

    def drop_graphs(self) -> int:
        """Forget the graphs and what they assumed; the next CUDA call captures again. Returns 1
        if there were graphs (the caller collects the garbage once: see "Garbage collection")."""
        had = bool(self.graphs)
        self.graphs.clear()
        self._tensors, self._pointers, self._submodules, self._params = None, [], [], []
        self._awaiting = None
        self.last_forward.clear()
        self.recaptures += had
        return int(had)

    def _watch_backward(self, out) -> None:
        """Hook the backward of this replay: it waits for it (``_awaiting``) and protects ``.grad``.

        The graphed backward returns its static gradient buffers, and autograd keeps such a
        buffer as ``param.grad`` when ``.grad`` was ``None``. If ``.grad`` is still set at the
        next graphed backward (``accumulate_grad_batches``, ``zero_grad(set_to_none=False)``),
        the replay would overwrite it before autograd adds the new gradient to it: the sum would
        be twice the new gradient. Just before the graphed backward, such gradients get their
        own storage; with ``set_to_none=True`` (Lightning's and PyTorch's default) nothing is
        copied.
        """
        if torch.is_tensor(out):     # most modules: one tensor, no tree walk
            node = out.grad_fn
        else:
            node = next((t.grad_fn for t in torch.utils._pytree.tree_leaves(out)
                         if torch.is_tensor(t) and t.grad_fn is not None), None)
        if node is None:
            return
        params = self._params

        def before_backward(grad_outputs):
            self._awaiting = None
            for p in params:
                if p.grad is not None:
                    p.grad = p.grad.clone()

        node.register_prehook(before_backward)
        try:
            # the node of make_graphed_callables' autograd.Function: dies with the forward's graph
            self._awaiting = weakref.ref(node)
        except TypeError:
            self._awaiting = None

    # -- capture ------------------------------------------------------------------------------

    def _on_device(self, args) -> bool:
        return all(a.is_cuda for a in args)

    def _capture_or_stop(self, kind, args, amp) -> Callable:
        """:meth:`_capture`, or :class:`CudaGraphCaptureError` (the module stays eager from then on)."""
        try:
            return self._capture(kind, args, amp)
        except Exception as error:  # noqa: BLE001 -- any capture failure: the CUDA state is suspect
            self.broken = True
            self.graphs.clear()
            self.graph_set.capture_failed = True
            first = str(error).splitlines()[0] if str(error) else ''
            raise CudaGraphCaptureError(
                f'CUDA graph capture of {self.name or "the network"} failed ({type(error).__name__}: {first}); '
                f'after a failed capture the CUDA state may be unusable: rerun with --cuda-graphs off '
                f"(cuda_graphs='off' in Python)") from error

    def _capture(self, kind, args, amp) -> Callable:
        """Capture one graph; the module's buffers are as before and its forward is this wrapper after."""
        module = self.module
        if not self.graph_set.collected:
            self.graph_set.collected = True
            gc.collect()        # earlier networks' dropped graphs: freed now, not during a capture
        if self._tensors is None:
            self._remember()
        saved = {name: b.detach().clone() for name, b in module.named_buffers()}
        installed = module.__dict__.pop('forward', None)     # capture must run the real forward
        stream = torch.cuda.current_stream() if torch.cuda.is_available() else None
        try:
            with _no_collection():
                graph = self._record_training(args, amp) if kind == 'train' else self._record_inference(args, amp)
            self.captures += 1
            self.captured_kinds.add(kind)
            return graph
        except BaseException:
            # torch.cuda.graph.__exit__ restores the caller's stream only when capture_end
            # succeeds (torch/cuda/graphs.py, 2.11 and 2.14): after a failed capture the work
            # would go on in the capture stream
            if stream is not None and torch.cuda.current_stream() != stream:
                torch.cuda.set_stream(stream)
            raise
        finally:
            module.__dict__.pop('forward', None)              # make_graphed_callables installs its own
            if installed is not None:
                module.forward = installed
            with torch.no_grad():
                for name, b in module.named_buffers():        # undo the warm-up's BN updates, in place
                    b.copy_(saved[name])

    def _record_training(self, args, amp) -> Callable:
        module = self.module
        samples = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
        with _autocast(amp):
            torch.cuda.make_graphed_callables(module, samples, num_warmup_iters=WARMUP_ITERS,
                                              allow_unused_input=True, **_CAPTURE_MODE)
        # make_graphed_callables replaced module.forward by its graphed forward: keep that
        return module.__dict__['forward']

    def _record_inference(self, args, amp) -> Callable:
        """A replay function returning the graph's static outputs (the caller clones them)."""
        module = self.module
        static_inputs = tuple(a.detach().clone() for a in args)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad(), _autocast(amp):
            for _ in range(WARMUP_ITERS):      # cuDNN autotuning and lazy init stay out of the graph
                module(*static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        if self.graph_set.inference_pool is None:
            self.graph_set.inference_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # warm-up and capture on one stream, as make_graphed_callables does: per-stream library
        # state (cuBLAS workspaces) is then created by the warm-up, not inside the capture
        with torch.no_grad(), _autocast(amp), torch.cuda.graph(graph, pool=self.graph_set.inference_pool,
                                                               stream=stream, capture_error_mode='thread_local'):
            static_out = module(*static_inputs)

        def replay(*inputs):
            for buffer, x in zip(static_inputs, inputs):
                buffer.copy_(x)
            graph.replay()
            return static_out

        return replay


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------

def graph_supernet(supernet: nn.Module, mode: str = 'auto', *, device=None, wrapper=None) -> list[str]:
    """Make every choice-free, one-tensor module of ``supernet`` run as CUDA graphs (in place).

    Parameters
    ----------
    supernet
        A supernet (NNI one-shot, path sampling) or a fixed network; the latter is wrapped whole.
    mode
        ``'auto'`` (graphs on a CUDA device) or ``'off'`` (plain eager PyTorch, nothing wrapped).
    device
        Where the network runs; default: the device of its first parameter.
    wrapper
        A class taking the module, whose instance becomes ``module.forward`` (CPU stand-ins in
        tests); default :class:`CudaGraphModule`. Subclasses of :class:`CudaGraphModule` are
        built like it (name, shared state, forward counting).

    Returns
    -------
    list[str]
        Qualified names of the wrapped modules (``''`` for a root wrapped whole); empty when
        ``mode`` resolves off.

    Examples
    --------
    >>> supernet = Enas().mutate_model(MacroSpace()).cuda()
    >>> names = graph_supernet(supernet)        # then train / score as usual
    """
    if device is None:
        first = next(supernet.parameters(), None)
        device = first.device if first is not None else 'cpu'
    if not use_cuda_graphs(mode, device):
        return []
    chosen = graphable_modules(supernet)
    whole = len(chosen) == 1 and chosen[0][1] is supernet
    ours = wrapper is None or (isinstance(wrapper, type) and issubclass(wrapper, CudaGraphModule))
    graph_set = _GraphSet(track_forwards=not whole)
    names = []
    for name, module in chosen:
        if not isinstance(module.__dict__.get('forward'), CudaGraphModule):
            if ours:
                module.forward = (wrapper or CudaGraphModule)(module, name=name, graph_set=graph_set)
            else:
                module.forward = wrapper(module)
        names.append(name)
    if ours and not whole and chosen:
        # counts supernet forwards for the "same module twice in one forward" rule
        supernet.register_forward_pre_hook(graph_set.next_forward)
    return names


def graph_wrappers(network: nn.Module) -> list[CudaGraphModule]:
    """The :class:`CudaGraphModule` wrappers installed in ``network``, in module order."""
    return [m.__dict__['forward'] for m in network.modules() if isinstance(m.__dict__.get('forward'), CudaGraphModule)]


def release_graphs(network: nn.Module) -> int:
    """Drop every captured graph of ``network`` (and of the rest of each wrapper's graph set).

    The wrappers stay installed and capture again at their next CUDA call. Called when Lightning
    tears a fit/validate/test down: it moves the network to the CPU (new storage when it comes
    back) and frees cuBLAS's workspaces, so those graphs could never replay safely; dropping them
    also returns their memory. Returns the number of wrappers that had graphs.
    """
    sets = {id(w.graph_set): w.graph_set for w in graph_wrappers(network)}
    return sum(graph_set.release() for graph_set in sets.values())
