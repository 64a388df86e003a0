"""Small models and images built in the tests (milliseconds each); the real model only in tests marked slow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import unveil


class IgnoresInput(torch.nn.Module):
    """Differentiable, but its output ignores the input: logits (1, 2, 0.5) for every image."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3)) * 0 + torch.tensor([1.0, 2.0, 0.5])


class TinyNet(torch.nn.Module):
    """A small convolutional classifier (3 x 32 x 32 -> 10 logits) with batch norm and ReLU."""

    def __init__(self, n_classes: int = 10, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.ReLU(),
        )
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(16, n_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.eval()

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny_model(batch_size=16, **kwargs) -> unveil.Model:
    return unveil.Model(TinyNet(**kwargs), input_size=(32, 32), batch_size=batch_size,
                        labels=[f"class{i}" for i in range(kwargs.get("n_classes", 10))])


@pytest.fixture
def tiny():
    return tiny_model()


@pytest.fixture
def image():
    """A 40 x 48 RGB image (not the model's input size, so maps are resized back)."""
    rng = np.random.default_rng(0)
    img = rng.random((40, 48, 3)).astype(np.float32)
    img[8:24, 10:30] = [0.9, 0.2, 0.1]
    return img


@pytest.fixture(scope="session")
def default_model():
    return unveil.load_model()
