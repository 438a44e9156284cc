"""The one v* step (bluebook.core.optim): torch.optim.Adam's update exactly, the clamp, the early stop."""
import pytest
import torch

from bluebook.core.config import TargetConfig
from bluebook.core.optim import adam_clamp_step, finished


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_step_is_torch_adam_then_the_clamp_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(16, generator=g, dtype=dtype) for _ in range(6)]
    lr, max_norm = 0.5, torch.tensor(2.5, dtype=dtype)     # step 1 moves ‖δ‖ to 2, later ones past 2.5
    ref = torch.zeros(16, dtype=dtype, requires_grad=True)
    opt = torch.optim.Adam([ref], lr=lr, foreach=False)
    ours = torch.zeros(16, dtype=dtype)
    m, v = torch.zeros_like(ours), torch.zeros_like(ours)
    clamped = 0
    for t, grad in enumerate(grads, 1):
        ref.grad = grad.clone()
        opt.step()
        with torch.no_grad():
            if ref.norm() > max_norm:
                ref.mul_(max_norm / ref.norm())
                clamped += 1
        adam_clamp_step(ours, m, v, grad, t, lr, max_norm)
        assert torch.equal(ours, ref.detach()), f"step {t}"
    assert 0 < clamped < len(grads), "the clamp must both act and not act here"


def test_rows_step_as_if_alone():
    g = torch.Generator().manual_seed(1)
    grads = torch.randn(5, 3, 8, generator=g, dtype=torch.float64)
    max_norm = torch.tensor([[0.5], [2.0], [100.0]], dtype=torch.float64)
    batch = torch.zeros(3, 8, dtype=torch.float64)
    mb, vb = torch.zeros_like(batch), torch.zeros_like(batch)
    alone = [(torch.zeros(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64),
              torch.zeros(8, dtype=torch.float64)) for _ in range(3)]
    for t in range(5):
        adam_clamp_step(batch, mb, vb, grads[t], t + 1, 0.5, max_norm)
        for r, (d, m, v) in enumerate(alone):
            adam_clamp_step(d, m, v, grads[t, r], t + 1, 0.5, max_norm[r, 0])
    for r, (d, _, _) in enumerate(alone):
        torch.testing.assert_close(batch[r], d, rtol=1e-15, atol=0)
    assert torch.allclose(batch[0].norm(), max_norm[0, 0]) and batch[2].norm() < 100


def test_early_stop_counts_the_steps_taken():
    cfg = TargetConfig(steps=5, early_stop=0.05)
    assert finished(0.01, 0, cfg) == 0             # below the threshold before any step: 0 steps
    assert finished(0.049, 3, cfg) == 3
    assert finished(0.05, 3, cfg) is None          # not below: go on
    assert finished(1.0, 4, cfg) == 5              # the last evaluation: every step was taken
    assert finished(0.0, 4, cfg) == 4
