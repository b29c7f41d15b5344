"""The vectorised engine against the naive per-group reference (float64, several variants and layouts)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from asgnas.optim import DHSPG, H2SPG, LAMBDA_DEFAULTS, resolve_target_count
from optim_testlib import BranchNet, ConvNet, MatMulMLP, NaiveHybrid, batches, digits

CASES = [
    # name, variant, base kwargs (incl. a large lmbda so that half-space projections happen quickly), epsilon
    ("sgd", "sgd", dict(lr=0.05, lmbda=4.0), 0.0),
    ("sgd-momentum-wd", "sgd", dict(lr=0.05, momentum=0.9, weight_decay=1e-3, lmbda=5.0), 0.5),
    ("sgd-nesterov", "sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, lmbda=5.0), 0.5),
    ("adam-wd", "adam", dict(lr=0.01, weight_decay=1e-3, lmbda=20.0), 0.5),
    ("adamw", "adamw", dict(lr=0.01, weight_decay=1e-2, lmbda=20.0), 0.5),
]


def _models():
    torch.manual_seed(0)
    conv = ConvNet(conv_bias=False).double()
    mlp = MatMulMLP().double()
    branch = BranchNet().double()
    return [(conv, conv.channel_groups()), (mlp, mlp.neuron_groups()), (branch, branch.branch_groups())]


class _SmallChunks(H2SPG):
    """Chunks of a few dozen values: every tensor is cut into many row chunks or flat pieces (partial sums)."""

    chunk_numel = 40


@pytest.mark.parametrize("name,variant,kw,epsilon", CASES, ids=[c[0] for c in CASES])
def test_matches_naive_reference(name, variant, kw, epsilon):
    _check_against_reference(H2SPG, name, variant, kw, epsilon)


@pytest.mark.parametrize("name,variant,kw,epsilon", [CASES[1], CASES[4]], ids=[CASES[1][0], CASES[4][0]])
def test_chunked_passes_match_naive_reference(name, variant, kw, epsilon):
    """The chunked row / flat passes (per-chunk stats, partial sums, per-chunk factor views) change nothing."""
    _check_against_reference(_SmallChunks, name, variant, kw, epsilon)


def _check_against_reference(cls, name, variant, kw, epsilon):
    x, y = digits()
    x = x.double()
    kw = dict(kw)
    lmbda = kw.pop("lmbda")
    steps, tw, hard = 16, 4, 14
    idx = batches(steps, batch=48, seed=1)
    natural = 0
    for model, groups in _models():
        ref_model = copy.deepcopy(model)
        ref_groups = _remap_groups(groups, model, ref_model)
        opt = cls(model.parameters(), groups, variant=variant, target_group_sparsity=0.5, warmup_steps=tw,
                  score_momentum=0.5, lmbda=lmbda, epsilon=epsilon, penalty_start=tw + 2, hard_zero_step=hard, **kw)
        if cls is _SmallChunks:
            assert max(len(e.chunks) for e in opt._entries) > 1
        defaults = dict(momentum=0.0, nesterov=False, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        defaults.update(kw)
        k = resolve_target_count(0.5, sum(g.removable for g in groups))
        _, amp, cap = LAMBDA_DEFAULTS[variant]
        ref = NaiveHybrid([dict(params=list(ref_model.parameters()), **defaults)], ref_groups, k, variant,
                          warmup_steps=tw, score_momentum=0.5, lmbda=lmbda, amplify=amp, cap=cap, epsilon=epsilon,
                          penalty_start=tw + 2, projection_start=tw, hard_zero_step=hard,
                          select=lambda order: order[:k])
        for t, i in enumerate(idx):
            for m in (model, ref_model):
                m.zero_grad()
                F.cross_entropy(m(x[i]), y[i]).backward()
            opt.step()
            ref.step()
            for (n, p), q in zip(model.named_parameters(), ref_model.parameters()):
                torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=f"{name} step {t} {n}")
            assert sorted(opt.zero_group_ids) == sorted(ref_groups[j].id for j in ref.zero), f"step {t}"
        assert sorted(opt.redundant_group_ids) == sorted(ref_groups[j].id for j in ref.redundant)
        m = opt.metrics()
        assert m["num_redundant_zero"] == m["num_redundant"] == k
        assert m["forced_zero_groups"] + m["projected_groups"] == k
        natural += m["projected_groups"]
        print(name, type(model).__name__, "projected", m["projected_groups"], "forced", m["forced_zero_groups"])
    assert natural > 0  # half-space projections (not only forced zeros) were compared


def test_per_tensor_learning_rates_match_reference():
    """Different lr / decoupled decay per param_group inside one group (non-uniform trial-point sums)."""
    x, y = digits()
    x = x.double()
    torch.manual_seed(3)
    model = ConvNet(conv_bias=False).double()
    ref_model = copy.deepcopy(model)
    groups = model.channel_groups()
    ref_groups = _remap_groups(groups, model, ref_model)

    def split(m):
        bn = [p for n, p in m.named_parameters() if n.startswith("bn")]
        rest = [p for n, p in m.named_parameters() if not n.startswith("bn")]
        return bn, rest

    bn, rest = split(model)
    rbn, rrest = split(ref_model)
    opt = H2SPG([dict(params=rest), dict(params=bn, lr=0.006, weight_decay=0.0)], groups, lr=0.01,
                variant="adamw", weight_decay=0.05, target_group_sparsity=0.5, warmup_steps=2, lmbda=20.0,
                epsilon=0.9)
    base = dict(momentum=0.0, nesterov=False, betas=(0.9, 0.999), eps=1e-8)
    k = resolve_target_count(0.5, len(groups))
    ref = NaiveHybrid([dict(params=rrest, lr=0.01, weight_decay=0.05, **base),
                       dict(params=rbn, lr=0.006, weight_decay=0.0, **base)], ref_groups, k, "adamw",
                      warmup_steps=2, score_momentum=0.9, lmbda=20.0, amplify=20.0, cap=1e3, epsilon=0.9,
                      penalty_start=2, projection_start=2, hard_zero_step=None, select=lambda o: o[:k])
    for t, i in enumerate(batches(16, batch=48, seed=2)):
        for m in (model, ref_model):
            m.zero_grad()
            F.cross_entropy(m(x[i]), y[i]).backward()
        opt.step()
        ref.step()
        for p, q in zip(model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=f"step {t}")
    assert len(ref.zero) > 0  # the comparison covered projections
    assert sorted(opt.zero_group_ids) == sorted(ref_groups[j].id for j in ref.zero)


def test_dhspg_selection_is_top_k_of_partition_step_score():
    x, y = digits()
    x = x.double()
    torch.manual_seed(5)
    model = ConvNet(conv_bias=False).double()
    ref_model = copy.deepcopy(model)
    groups = model.channel_groups()
    ref_groups = _remap_groups(groups, model, ref_model)
    k = 7
    opt = DHSPG(model.parameters(), groups, lr=0.05, momentum=0.9, target_group_sparsity=k, warmup_steps=3)
    ref = NaiveHybrid([dict(params=list(ref_model.parameters()), lr=0.05, momentum=0.9, nesterov=False,
                            betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)], ref_groups, k, "sgd",
                      warmup_steps=3, score_momentum=0.0, lmbda=1e-3, amplify=2.0, cap=10.0, epsilon=0.0,
                      penalty_start=3, projection_start=3, hard_zero_step=None, select=lambda o: o[:k])
    for i in batches(5, seed=4):
        for m in (model, ref_model):
            m.zero_grad()
            F.cross_entropy(m(x[i]), y[i]).backward()
        opt.step()
        ref.step()
    assert sorted(opt.redundant_group_ids) == sorted(ref_groups[j].id for j in ref.redundant)
    assert len(opt.redundant_group_ids) == k
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


def _remap_groups(groups, model, other):
    """The same groups, pointing at ``other``'s parameters (a deepcopy of ``model``)."""
    from asgnas.optim import ParamGroup, ParamSlice

    mp = {id(p): q for p, q in zip(model.parameters(), other.parameters())}
    return [ParamGroup(g.id, [ParamSlice(mp[id(s.param)], s.axis, s.indices) for s in g.slices], g.removable)
            for g in groups]


@pytest.mark.parametrize("variant,kw", [("sgd", dict(lr=0.05, momentum=0.9, lmbda=10.0)),
                                        ("adamw", dict(lr=0.01, weight_decay=1e-2, lmbda=60.0))])
def test_nested_groups_match_reference(variant, kw):
    """Channel groups inside whole-layer groups (kind="both"): penalties add, zero wins, exact trial point."""
    from asgnas.optim import ParamGroup, ParamSlice

    x, y = digits()
    x = x.double()
    torch.manual_seed(13)
    model = ConvNet(conv_bias=False).double()
    ref_model = copy.deepcopy(model)

    def nested(m):
        gs = m.channel_groups()  # ids 0..19
        gs.append(ParamGroup(50, [ParamSlice(m.conv1.weight), ParamSlice(m.bn1.weight), ParamSlice(m.bn1.bias)]))
        gs.append(ParamGroup(51, [ParamSlice(m.conv2.weight), ParamSlice(m.bn2.weight), ParamSlice(m.bn2.bias)]))
        return gs

    groups, ref_groups = nested(model), nested(ref_model)
    chosen = [0, 1, 8, 9, 20]  # conv1 channels 0,1 inside the whole conv1 layer (both penalised) + conv2 0,1
    rank = chosen + [i for i in range(len(groups)) if i not in chosen]

    def score_fn(xx, xd, dd, sizes):
        s = torch.zeros_like(xx)
        for r, i in enumerate(rank):
            s[i] = float(len(rank) - r)
        return s

    kw = dict(kw)
    lmbda = kw.pop("lmbda")
    opt = H2SPG(model.parameters(), groups, variant=variant, target_group_sparsity=len(chosen), warmup_steps=2,
                lmbda=lmbda, epsilon=0.5, score_fn=score_fn, hard_zero_step=14, **kw)
    assert opt.layout.has_overlap
    base = dict(momentum=0.0, nesterov=False, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    base.update(kw)
    _, amp, cap = LAMBDA_DEFAULTS[variant]
    ref = NaiveHybrid([dict(params=list(ref_model.parameters()), **base)], ref_groups, len(chosen), variant,
                      warmup_steps=2, score_momentum=0.9, lmbda=lmbda, amplify=amp, cap=cap, epsilon=0.5,
                      penalty_start=2, projection_start=2, hard_zero_step=14, select=lambda order: sorted(chosen))
    for t, i in enumerate(batches(16, batch=48, seed=6)):
        for m in (model, ref_model):
            m.zero_grad()
            F.cross_entropy(m(x[i]), y[i]).backward()
        opt.step()
        ref.step()
        for p, q in zip(model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=f"step {t}")
        assert sorted(opt.zero_group_ids) == sorted(ref_groups[j].id for j in ref.zero), f"step {t}"
    assert sorted(opt.redundant_group_ids) == sorted(groups[i].id for i in chosen)
    m = opt.metrics()
    assert m["num_redundant_zero"] == len(chosen)
    assert m["projected_groups"] >= 2  # the half-space test (with the overlap term) fired, not only the safeguard
    # conv1 erased as a whole: all its channel groups read as zero too; conv2's other channels live on
    assert m["num_zero_groups"] == len(set(chosen) | set(range(8)))
    assert not any(groups[i].id in opt.zero_group_ids for i in range(8, 20) if i not in chosen)
