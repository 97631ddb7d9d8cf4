"""Small example models for the demo, the benchmarks and the tests. Nothing is downloaded:
scikit-learn's bundled digits data, and PyTorch nets built (and briefly trained) here.

The torch factories are importable as ``converters.examples:small_cnn`` etc., which is the form
``edgectl convert MODULE:FACTORY`` takes.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from numpy.typing import NDArray


def digits(seed: int = 0) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The 1,797 8x8 digit images, scaled to [0, 1], shuffled with a fixed seed."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    return (x[order] / 16.0).astype(np.float32), y[order].astype(np.int64)


def train_digits_mlp(hidden: tuple[int, ...] = (256, 128), seed: int = 0) -> Any:
    """A scikit-learn MLPClassifier trained on the first 1,300 digits."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(hidden, max_iter=300, random_state=seed).fit(x[:1300], y[:1300])


def _torch() -> Any:
    import torch

    return torch


def torch_mlp(hidden: int = 256, n_in: int = 64, n_out: int = 10, layers: int = 2) -> Any:
    nn = _torch().nn
    dims = [n_in] + [hidden] * layers
    mods: list[Any] = []
    for a, b in itertools.pairwise(dims):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(dims[-1], n_out))


def small_cnn() -> Any:
    """Two conv layers and two dense layers for 1x8x8 digit images."""
    nn = _torch().nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def mobilenet_style(width: int = 32, n_out: int = 10) -> Any:
    """Depthwise-separable blocks (depthwise 3x3 + BN + ReLU6, pointwise 1x1 + BN + ReLU6) on
    3x32x32 inputs, like MobileNet v1 at a small scale."""
    nn = _torch().nn

    def block(c_in: int, c_out: int, stride: int) -> list[Any]:
        return [
            nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
            nn.ReLU6(),
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU6(),
        ]

    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU6(),
        *block(w, 2 * w, 1), *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w, 1),
        *block(4 * w, 8 * w, 2), *block(8 * w, 8 * w, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, n_out),
    )


def train_torch(module: Any, x: NDArray[np.float32], y: NDArray[np.int64], *, epochs: int = 30,
                lr: float = 3e-3, seed: int = 0) -> Any:
    """Full-batch-ish Adam training; enough for the small nets here. Returns the module (eval)."""
    torch = _torch()
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt)).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return module.eval()


def trained_digits_cnn() -> Any:
    x, y = digits()
    return train_torch(small_cnn(), x[:1300].reshape(-1, 1, 8, 8), y[:1300], epochs=15)


def trained_digits_torch_mlp(hidden: int = 256) -> Any:
    x, y = digits()
    return train_torch(torch_mlp(hidden), x[:1300], y[:1300], epochs=20)


def synthetic_images(n: int, seed: int = 0) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """3x32x32 images of 10 classes: class-coloured blobs on noise, so a net can learn them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.normal(0.0, 0.3, (n, 3, 32, 32)).astype(np.float32)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 5)
        x[i, label % 3, 4 + 12 * r:16 + 12 * r, 2 + 6 * c:8 + 6 * c] += 1.5
    return x, y.astype(np.int64)


def trained_mobilenet_style() -> Any:
    x, y = synthetic_images(1200)
    return train_torch(mobilenet_style(), x, y, epochs=4)
