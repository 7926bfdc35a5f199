"""The tiny model can fit: one small synthetic batch is overfit to L1 < 0.05 in a bounded number of steps."""

import torch

from cogvla.config import get_preset
from cogvla.fake_data import fake_batch
from cogvla.modeling import CogVLAModel

MAX_STEPS = 250
TARGET_L1 = 0.05


def test_tiny_overfits_one_batch():
    # a long loop: one intra-op thread, so it never oversubscribes a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = _overfit()
    finally:
        torch.set_num_threads(threads)
    assert history[-1] < TARGET_L1, (
        f"L1 after {len(history)} steps: {history[-1]:.4f} (start {history[0]:.4f})"
    )


def _overfit() -> list[float]:
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).train()
    batch = fake_batch(model.config, batch_size=2, prompt_tokens=12, left_pad=[0, 3])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    history = []
    for _ in range(MAX_STEPS):
        loss, metrics = model.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(metrics["l1"])
        if metrics["l1"] < TARGET_L1:
            break
    return history
