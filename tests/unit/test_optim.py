import math

import pytest
import torch

from longrl.config.worker import OptimConfig
from longrl.train.optim import build_optimizer, build_scheduler, lr_multiplier


def test_warmup_then_cosine_hand_computed():
    # 2 warm-up steps of 10: 0.5, 1.0, then cosine over 8 steps down to min 0.1.
    values = [lr_multiplier(s, 10, 2, "cosine", 0.1) for s in range(10)]
    assert values[0] == pytest.approx(0.5) and values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(1.0)
    # step 6: progress 4/8 -> 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert values[6] == pytest.approx(0.55)
    assert values[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr_multiplier(5, 10, 0, "constant", 0.0) == 1.0


def test_optimizer_groups_and_scheduler_drive_lr():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model[1].weight.requires_grad_(False)
    config = OptimConfig(lr=1e-3, weight_decay=0.1, lr_warmup_steps=2, lr_scheduler="cosine")
    optimizer = build_optimizer(model, config)
    decay, no_decay = optimizer.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 2  # linear bias + layernorm bias (weight frozen)
    scheduler = build_scheduler(optimizer, config, total_steps=4)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4])
