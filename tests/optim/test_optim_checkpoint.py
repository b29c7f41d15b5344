"""state_dict() / load_state_dict(): a resumed run follows the uninterrupted trajectory bit for bit."""
from __future__ import annotations

import io

import pytest
import torch

from asgnas.optim import DHSPG, H2SPG
from optim_testlib import MatMulMLP, batches, train

CONFIGS = [
    ("sgd-nesterov-wd", H2SPG, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, lmbda=5.0)),
    ("adam", H2SPG, dict(variant="adam", lr=0.02, weight_decay=1e-4, lmbda=20.0)),
    ("adamw", H2SPG, dict(variant="adamw", lr=0.02, weight_decay=1e-2, lmbda=20.0)),
    ("dhspg-sgd", DHSPG, dict(lr=0.1, momentum=0.9, lmbda=5.0)),
]
STEPS, WARMUP, HARD = 30, 5, 24


def _make(cls, kw, seed):
    torch.manual_seed(seed)  # a different init: everything must come from the checkpoints
    model = MatMulMLP()
    opt = cls(model.parameters(), model.neuron_groups(), target_group_sparsity=0.5, warmup_steps=WARMUP,
              epsilon=0.5, hard_zero_step=HARD, **kw)
    return model, opt


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("name,cls,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_resume_is_bit_identical(name, cls, kw):
    idx = batches(STEPS, seed=11)
    model, opt = _make(cls, kw, seed=0)
    snaps = {cut: None for cut in (3, WARMUP, 14)}  # in warm-up, right before the search, in the hybrid phase

    def hook(t):
        if t + 1 in snaps:
            snaps[t + 1] = (_roundtrip(model.state_dict()), _roundtrip(opt.state_dict()))

    train(model, opt, idx, hook=hook)
    final = [p.detach().clone() for p in model.parameters()]
    assert opt.metrics()["num_zero_groups"] == opt.target_count

    for cut, (msd, osd) in snaps.items():
        m2, o2 = _make(cls, kw, seed=1 + cut)
        if cut == 14:
            assert osd["state"]["asgnas"]["zero"].any()  # the checkpoint holds zero groups already
        m2.load_state_dict(msd)
        o2.load_state_dict(osd)
        assert o2.metrics()["step"] == cut
        train(m2, o2, idx[cut:])
        for p, q in zip(final, m2.parameters()):
            assert torch.equal(p, q), f"resume at {cut} diverged"
        assert o2.redundant_group_ids == opt.redundant_group_ids
        assert o2.zero_group_ids == opt.zero_group_ids
        m_a, m_b = opt.metrics(), o2.metrics()
        for k in ("step", "num_zero_groups", "forced_zero_groups", "projected_groups", "score_steps"):
            assert m_a[k] == m_b[k], k


def test_saved_state_is_a_snapshot():
    model, opt = _make(H2SPG, dict(lr=0.1, momentum=0.9, lmbda=5.0), seed=0)
    idx = batches(12, seed=2)
    train(model, opt, idx[:6])
    sd = opt.state_dict()
    step, red = sd["state"]["asgnas"]["step"], sd["state"]["asgnas"]["redundant"].clone()
    train(model, opt, idx[6:])
    assert sd["state"]["asgnas"]["step"] == step == 6
    assert torch.equal(sd["state"]["asgnas"]["redundant"], red)


def test_group_count_mismatch_is_rejected():
    model, opt = _make(H2SPG, dict(lr=0.1), seed=0)
    sd = opt.state_dict()
    sd["state"]["asgnas"]["n_groups"] = 3
    with pytest.raises(ValueError, match="groups"):
        opt.load_state_dict(sd)
