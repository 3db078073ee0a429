"""The language-model recipe (nni_enas.training.language_model) and NT-ASGD (nni_enas.training.averaging).

A small stand-in network with the recurrent space's forward contract (tests/helpers.py ``TinyLM``)
records the state every call starts from, so the tests follow the hidden state from window to
window: carried (and detached) across training windows, zero at every epoch's start, zero at
the start of validation and test and carried through them. Seconds in all.
"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from helpers import TinyLM, Windows, text_windows
from nni_enas.training.averaging import NonMonotoneTrigger, WeightAverage
from nni_enas.training.classification import NonFiniteLossError
from nni_enas.training.language_data import RandomOrder
from nni_enas.training.language_model import (LanguageModelTraining, PerplexityReward, activation_l2,
                                              cross_entropy, evaluate_perplexity, slowness_penalty)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def stream(n=120, vocab=7, seed=1):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def fit(module, train, valid=None, epochs=2, callbacks=(), **kwargs):
    trainer = pl.Trainer(max_epochs=epochs, accelerator='cpu', logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=list(callbacks), **kwargs)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=valid)
    return trainer


def recipe(net, **kwargs):
    module = LanguageModelTraining(**{'lr': 1.0, 'bptt': 5, **kwargs})
    module.set_model(net)
    return module


def test_training_carries_the_state_across_windows_and_resets_it_each_epoch():
    net = TinyLM()
    windows = text_windows(stream(), batch_size=3, bptt=5)       # 8 windows of [3, <=5]
    fit(recipe(net), windows, epochs=2)
    calls = net.calls
    assert len(calls) == 2 * len(windows)
    for epoch in range(2):
        mine = calls[epoch * len(windows):(epoch + 1) * len(windows)]
        assert mine[0][0] is None                               # zero state at the epoch's start
        for (_, returned, _), (started, _, training) in zip(mine, mine[1:]):
            assert training and torch.equal(started, returned)  # the previous window's last state
    # detached: a window's backward does not reach into the previous one (else the second
    # backward through the freed graph would raise); the carried tensor has no history
    module = recipe(TinyLM())
    module.training_step(windows[0], 0).backward()
    assert module._hidden.grad_fn is None and not module._hidden.requires_grad
    module.training_step(windows[1], 1).backward()


def test_validation_and_test_start_from_zero_and_carry_the_state():
    net = TinyLM()
    text = stream(80, seed=3)
    module = recipe(net)
    valid = text_windows(text, batch_size=1, bptt=7)
    trainer = fit(module, text_windows(stream(), 3, 5), valid, epochs=1)
    val_calls = [c for c in net.calls if not c[2]]
    assert len(val_calls) == len(valid) and val_calls[0][0] is None
    for (_, returned, _), (started, _, _) in zip(val_calls, val_calls[1:]):
        assert torch.equal(started, returned)
    # carried over windows of 7 == one forward over the whole text: no reset inside the split
    net.eval()
    with torch.no_grad():
        out = net(text[None, :-1])
        whole = math.exp(float(cross_entropy(out.logits, text[None, 1:])))
    assert trainer.callback_metrics['val_ppl'].item() == pytest.approx(whole, rel=1e-5)
    assert evaluate_perplexity(net, valid) == pytest.approx(whole, rel=1e-5)
    result = trainer.test(module, dataloaders=valid, verbose=False)[0]
    assert result['test_ppl'] == pytest.approx(whole, rel=1e-5)
    assert result['test_loss'] == pytest.approx(math.log(whole), rel=1e-5)


class LrWatch(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.seen.append(optimizer.param_groups[0]['lr'])


def test_learning_rate_is_scaled_by_the_window_length():
    rows = stream(60).reshape(2, 30)
    windows = Windows([(rows[:, i:i + n], rows[:, i + 1:i + 1 + n]) for i, n in ((0, 5), (5, 2), (7, 9))])
    watch = LrWatch()
    fit(recipe(TinyLM(), lr=20.0, bptt=5), windows, epochs=1, callbacks=[watch])
    assert watch.seen == pytest.approx([20.0, 8.0, 36.0])


def test_regularisers_and_loss():
    states = torch.tensor([[[0.0, 1.0], [2.0, 1.0], [2.0, 3.0]]])        # [1, 3, 2]
    assert float(activation_l2(states)) == pytest.approx((0 + 1 + 4 + 1 + 4 + 9) / 6)
    assert float(slowness_penalty(states)) == pytest.approx((4 + 0 + 0 + 4) / 4)
    assert float(slowness_penalty(states[:, :1])) == 0.0
    net = TinyLM()
    windows = text_windows(stream(), 3, 5)
    module = recipe(net, slowness=0.5, activation_l2=0.25)
    loss = module.training_step(windows[0], 0)
    net.calls.clear()
    out = net(*[windows[0][0]])
    expected = (cross_entropy(out.logits, windows[0][1]) + 0.5 * slowness_penalty(out.states)
                + 0.25 * activation_l2(out.states))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_weight_decay_is_wd_times_the_sum_of_squares():
    # one recipe step equals plain SGD on cross entropy + wd * sum(w^2) (enas_lm's form)
    windows = text_windows(stream(), 3, 5)
    nets = TinyLM(seed=4), TinyLM(seed=4)
    module = recipe(nets[0], lr=0.5, weight_decay=0.01)
    optimizer = module.configure_optimizers()
    optimizer.zero_grad()
    module.training_step(windows[0], 0).backward()
    optimizer.step()
    manual = torch.optim.SGD(nets[1].parameters(), lr=0.5)
    out = nets[1](windows[0][0])
    loss = cross_entropy(out.logits, windows[0][1]) + 0.01 * sum(p.pow(2).sum() for p in nets[1].parameters())
    loss.backward()
    manual.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_perplexity_reward_and_random_order():
    logits = torch.randn(2, 3, 5)
    target = torch.randint(0, 5, (2, 3))
    ce = F.cross_entropy(logits.reshape(6, 5), target.reshape(6))
    assert float(PerplexityReward()(logits, target)) == pytest.approx(80 / math.exp(float(ce)), rel=1e-6)
    # the reward forward starts from a zero state
    net = TinyLM()
    module = recipe(net)
    module.eval()
    module(torch.zeros(2, 4, dtype=torch.long))
    assert net.calls[-1][0] is None and not net.calls[-1][2]
    windows = [(torch.full((1, 2), i), torch.full((1, 2), i)) for i in range(6)]
    order = RandomOrder(windows)
    torch.manual_seed(0)
    first = [int(x[0, 0]) for x, _ in order]
    second = [int(x[0, 0]) for x, _ in order]
    assert sorted(first) == sorted(second) == list(range(6)) and first != second and len(order) == 6
    with pytest.raises(ValueError, match='too short'):
        RandomOrder([])


def test_nonmonotone_trigger_follows_enas_lm():
    trigger = NonMonotoneTrigger(patience=2)
    # fires once more than 2 values are recorded and the new one is above min(all but the last 2)
    fired = [trigger.update(p) for p in (10, 9, 8, 7, 7.5, 9.5, 6)]
    assert fired == [False, False, False, False, False, True, True] and trigger.fired_at == 6
    state = trigger.state_dict()
    again = NonMonotoneTrigger(5)
    again.load_state_dict(state)
    assert again.history == trigger.history and again.fired_at == 6 and again.patience == 2
    with pytest.raises(ValueError):
        NonMonotoneTrigger(0)


def test_weight_average_is_the_uniform_mean_and_swaps_back():
    net = torch.nn.Linear(2, 2)
    average = WeightAverage()
    snapshots = []
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(value)
        average.update(net)
        snapshots.append(value)
    with average.swapped_in(net) as swapped:
        assert swapped and all(torch.allclose(p, torch.full_like(p, 3.0)) for p in net.parameters())
    assert all(torch.equal(p, torch.full_like(p, 6.0)) for p in net.parameters())
    restored = WeightAverage()
    restored.load_state_dict(average.state_dict())
    assert restored.count == 3 and torch.equal(restored.average[0], average.average[0])
    with WeightAverage().swapped_in(net) as swapped:
        assert not swapped


def test_validation_uses_the_averaged_weights_once_triggered(tmp_path):
    net = TinyLM()
    train, valid = text_windows(stream(), 3, 5), text_windows(stream(40, seed=9), 1, 7)
    module = recipe(net, weight_averaging=True, averaging_patience=1)
    module.trigger.load_state_dict({'patience': 1, 'history': [5.0, 6.0], 'fired_at': 2})   # already on
    trainer = fit(module, train, valid, epochs=1)
    assert module.average.count == len(train)                 # one update per step once triggered
    with module.average.swapped_in(net):
        expected = evaluate_perplexity(net, valid)
    assert trainer.callback_metrics['val_ppl'].item() == pytest.approx(expected, rel=1e-5)
    assert evaluate_perplexity(net, valid) != pytest.approx(expected, rel=1e-5)   # swapped back after
    # the averaging state travels in the checkpoint
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    fresh = recipe(TinyLM(), weight_averaging=True)
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.average.count == module.average.count and fresh.trigger.history == module.trigger.history


def test_trigger_starts_averaging_after_a_stall():
    # patience 1: epoch 3's validation is worse than epoch 1's, so epoch 4 averages
    module = recipe(TinyLM(), weight_averaging=True, averaging_patience=1, lr=5.0)
    values = iter([4.0, 3.0, 5.0, 5.0])
    module._eval_end = lambda prefix: next(values)             # planted validation perplexities
    fit(module, text_windows(stream(), 3, 5), text_windows(stream(20), 1, 5), epochs=4)
    assert module.trigger.history == [4.0, 3.0, 5.0, 5.0] and module.trigger.fired_at == 3
    assert module.average.count == len(text_windows(stream(), 3, 5))      # epoch 4's steps only


def test_nonfinite_loss_stops_training():
    net = TinyLM()
    module = recipe(net)
    with torch.no_grad():
        net.cell.weight.fill_(float('nan'))
    with pytest.raises(NonFiniteLossError, match='nan/inf'):
        fit(module, text_windows(stream(), 3, 5), epochs=1)


class StandInGraph:
    """A CPU stand-in for a CUDA graph of one window length: runs the network, counts its calls."""

    made = []

    def __init__(self, net):
        self.net, self.shapes = net, []
        StandInGraph.made.append(self)

    def __call__(self, tokens, hidden):
        self.shapes.append(tuple(tokens.shape))
        return self.net(tokens, hidden)


def test_window_graphs_pad_to_a_bucket_and_give_the_unpadded_results():
    from nni_enas.training.window_graphs import WindowGraphs, padded_length
    assert [padded_length(t, 8) for t in (1, 8, 9, 35, 55)] == [8, 8, 16, 40, 56]
    StandInGraph.made.clear()
    net = TinyLM(seed=3)
    graphs = WindowGraphs(net, bucket=8, wrapper=StandInGraph)
    x = torch.randint(0, 7, (2, 11))
    y = torch.randint(0, 7, (2, 11))
    h0 = torch.randn(2, 6) * 0.1
    padded = graphs(x, h0)
    plain = net(x, h0)
    assert torch.allclose(padded.logits, plain.logits, atol=1e-6) and torch.allclose(padded.hidden, plain.hidden, atol=1e-6)
    assert padded.states.shape == (2, 11, 6) and StandInGraph.made[0].shapes == [(2, 16)]
    # the gradients of the loss are those of the unpadded window (the padded steps add zero)
    grads = []
    for out in (graphs(x, h0), net(x, h0)):
        net.zero_grad()
        cross_entropy(out.logits, y).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
    graphs(x[:, :16].repeat(1, 2)[:, :16], None)                  # 16 steps: the same graph, a zero state
    graphs(x[:, :3], None)                                         # 3 steps: graph of 8
    assert sorted(graphs.graphs) == [8, 16] and len(StandInGraph.made) == 2
    exact = WindowGraphs(net, bucket=8, exact=(11,), wrapper=StandInGraph)
    exact(x, None)
    assert sorted(exact.graphs) == [11] and StandInGraph.made[-1].shapes == [(2, 11)]


def test_recipe_uses_window_graphs_only_for_a_fixed_network_on_cuda():
    module = recipe(TinyLM())
    assert not module.enable_cuda_graphs(device='cpu')            # CPU: eager
    assert module.enable_cuda_graphs(device='cuda', wrapper=StandInGraph)
    windows = text_windows(stream(), 3, 5)
    StandInGraph.made.clear()
    loss = module.training_step(windows[0], 0)
    assert StandInGraph.made and torch.isfinite(loss)
    assert not recipe(TinyLM(), cuda_graphs='off').enable_cuda_graphs(device='cuda')
    with pytest.raises(ValueError):
        LanguageModelTraining(cuda_graphs='on')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (gpu test)')
def test_gpu_window_graphs_match_eager_training_and_evaluation():
    """Real CUDA graphs of the paper cell (no dropout, so both sides are deterministic) against eager PyTorch."""
    import copy
    from nni_enas.architecture import build_network, load_architecture
    from nni_enas.training.window_graphs import WindowGraphs
    torch.manual_seed(0)
    rates = {f'dropout_{k}': 0.0 for k in 'eixho'}
    eager = build_network(load_architecture('paper-rnn', validate=False), vocab_size=50, hidden_size=32, **rates).cuda()
    graphed = copy.deepcopy(eager)
    graphs = WindowGraphs(graphed, exact=(35,))
    ids = torch.randint(0, 50, (4, 200), device='cuda')
    starts, hidden = 0, {'eager': None, 'graphed': None}
    for length in (35, 30, 41, 35, 7):
        x, y = ids[:, starts:starts + length], ids[:, starts + 1:starts + 1 + length]
        starts += length
        grads = {}
        for name, run, net in (('eager', eager, eager), ('graphed', graphs, graphed)):
            net.zero_grad(set_to_none=True)
            out = run(x, hidden[name])
            cross_entropy(out.logits, y).backward()
            hidden[name] = out.hidden.detach().clone()
            grads[name] = [p.grad.clone() for p in net.parameters()]
        assert torch.allclose(hidden['eager'], hidden['graphed'], atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads['eager'], grads['graphed']))
    assert sorted(graphs.graphs) == [8, 32, 35, 48] and sum(g.replays for g in graphs.graphs.values()) > 0
    with torch.no_grad():
        assert torch.allclose(eager(ids[:, :35], None).logits, graphs(ids[:, :35], None).logits, atol=1e-5)
