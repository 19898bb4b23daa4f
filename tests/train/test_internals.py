"""Direct tests of the training internals: task loss, scheduler, best-epoch choice, RNG state, epoch metric."""

import math
import random

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from medrec.config import EarlyStopping, validate_config
from medrec.models.build import combined_loss
from medrec.train.checkpoint import rng_state, set_rng_state
from medrec.train.fold import _make_scheduler
from medrec.train.loop import TaskLoss
from medrec.train.monitor import epoch_metric
from medrec.train.state import FoldState


def _bce(z, y, pos_weight=1.0):
    """Binary cross-entropy with logits, written out: -(w y log s(z) + (1 - y) log(1 - s(z)))."""
    s = 1 / (1 + math.exp(-z))
    return -(pos_weight * y * math.log(s) + (1 - y) * math.log(1 - s))


def test_multilabel_loss_masks_missing_labels_and_weights_positives():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    target = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    loss = TaskLoss("multilabel", pos_weight=torch.tensor([2.0, 3.0]))(logits, target)
    expected = (_bce(0.3, 1, 2.0) + _bce(2.0, 0, 2.0) + _bce(0.5, 1, 3.0)) / 3  # the NaN cell is left out
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_and_multiclass_weights_match_torch_reference():
    logits = torch.tensor([[1.0, 0.2, -0.5], [0.1, 0.4, 2.0]])
    target = torch.tensor([[0.0], [2.0]])
    w = torch.tensor([1.0, 2.0, 0.5])
    got = TaskLoss("multiclass", class_weight=w, label_smoothing=0.1)(logits, target)
    # hand-written: weighted mean over samples of sum_k q_k * -log p_k with q = (1-e) onehot + e/K
    logp = logits.log_softmax(1)
    num = den = 0.0
    for i, c in enumerate([0, 2]):
        q = torch.full((3,), 0.1 / 3)
        q[c] += 0.9
        num += float(-(w * q * logp[i]).sum())
        den += float(w[c])
    assert got.item() == pytest.approx(num / den, rel=1e-5)
    smooth = TaskLoss("binary", label_smoothing=0.2)(torch.tensor([[0.7]]), torch.tensor([[1.0]]))
    assert smooth.item() == pytest.approx(_bce(0.7, 0.9), rel=1e-6)  # target 1 -> 0.8 + 0.1


def test_combined_loss_adds_weighted_aux_heads():
    crit = TaskLoss("binary")
    y = torch.tensor([[1.0], [0.0]])
    main, a1, a2 = torch.tensor([[0.5], [-0.3]]), torch.tensor([[1.0], [1.0]]), torch.tensor([[-2.0], [0.1]])
    assert combined_loss(crit, main, y, 0.4).item() == pytest.approx(crit(main, y).item())
    got = combined_loss(crit, (main, a1, a2), y, 0.4)
    assert got.item() == pytest.approx(crit(main, y).item() + 0.4 * (crit(a1, y).item() + crit(a2, y).item()), rel=1e-6)


def test_cosine_schedule_with_warmup_follows_its_formula():
    cfg = validate_config({"train": {"epochs": 3, "warmup_epochs": 1, "scheduler": "cosine", "lr": 0.1}})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = _make_scheduler(cfg, opt, steps_per_epoch=4)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm, total = 4, 12
    expected = [0.1 * (s + 1) / warm if s < warm else 0.1 * 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
                for s in range(12)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    none = validate_config({"train": {"scheduler": "none"}})
    assert _make_scheduler(none, opt, 4) is None


@pytest.mark.parametrize("metric, values, best_epoch", [
    ("auroc", [0.6, 0.7, 0.65, 0.7, float("nan")], 1),  # ties keep the earlier epoch, NaN never wins
    ("loss", [0.9, 0.5, 0.7, 0.4, 0.45], 3),  # loss is minimised (derived, not configured)
    ("auroc", [float("nan"), 0.55, 0.5], 1),  # a NaN first epoch does not block later ones
])
def test_best_epoch_choice_and_patience(metric, values, best_epoch):
    es = EarlyStopping(metric=metric, patience=1)
    state = FoldState()
    for epoch, v in enumerate(values):
        state.update_best(epoch, v, es, weights=lambda e=epoch: {"epoch": e})
    assert state.best_epoch == best_epoch and state.best_weights == {"epoch": best_epoch}
    assert state.bad_epochs == len(values) - 1 - best_epoch
    assert state.stopped(1) == (state.bad_epochs > 1)
    no_es = FoldState()
    no_es.update_best(0, 0.5, EarlyStopping(metric=metric), weights=lambda: pytest.fail("weights copied"))
    assert no_es.best_weights is None and not no_es.stopped(None)


def test_rng_state_round_trip_restores_every_generator():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    saved = torch.load(_round_trip(state), weights_only=True)  # as a checkpoint stores it
    set_rng_state(saved)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def _round_trip(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_epoch_metric_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(40, 3)).astype(float)
    s = rng.random((40, 3))
    y[rng.random(y.shape) < 0.2] = np.nan
    ok = [~np.isnan(y[:, j]) for j in range(3)]
    expected = np.mean([roc_auc_score(y[ok[j], j], s[ok[j], j]) for j in range(3)])
    assert epoch_metric(y, s, "multilabel", "auroc", val_loss=0.0) == pytest.approx(expected)
    acc = np.mean([accuracy_score(y[ok[j], j], s[ok[j], j] >= 0.5) for j in range(3)])
    assert epoch_metric(y, s, "multilabel", "accuracy", val_loss=0.0) == pytest.approx(acc)
    yc = rng.integers(0, 3, size=30)
    sc = rng.dirichlet(np.ones(3), size=30)
    assert epoch_metric(yc[:, None], sc, "multiclass", "auroc", val_loss=0.0) == pytest.approx(
        roc_auc_score(yc, sc, multi_class="ovr"))
    assert math.isnan(epoch_metric(np.zeros((5, 1)), rng.random((5, 1)), "binary", "auroc", val_loss=0.0))
    assert epoch_metric(y, s, "multilabel", "loss", val_loss=0.25) == 0.25
