import copy

import pytest
import torch

from spikeguard.data import load_dataset
from spikeguard.models import ModelSpec, create_model

# Tiny models gain nothing from a second thread, and on a busy machine two threads per process spin
# against each other (several-fold slower); subprocess tests set OMP_NUM_THREADS=1 for the same reason.
torch.set_num_threads(1)


def tiny_spec(**kw) -> ModelSpec:
    base = dict(name="digits_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0.3,), std=(0.4,),
                time_steps=4)
    return ModelSpec(**{**base, **kw})


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def digits_tensors(digits):
    from spikeguard.data import stack

    return stack(digits.train), stack(digits.test)


@pytest.fixture(scope="session")
def _trained_tiny(digits_tensors):
    """A tiny digits SNN (T = 4) trained for two epochs: it spikes, has gradients and is mostly right."""
    (x, y), _ = digits_tensors
    torch.manual_seed(0)
    model = create_model(tiny_spec())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(2):
        for i in range(0, len(y), 64):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


@pytest.fixture
def tiny_model(_trained_tiny):
    return copy.deepcopy(_trained_tiny)


@pytest.fixture
def digits_batch(digits_tensors):
    _, (x, y) = digits_tensors
    return x[:16], y[:16]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module: tiny models run fastest so on a shared machine, and bitwise
    equality across processes (resume, distributed) needs the same thread count in each (docs/reliability.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
