"""Our PGD against torchattacks' on the same seed. torchattacks 3.5.1 pins requests 2.25 (old releases of
requests, idna and urllib3 with known vulnerabilities), so this check lives apart: .ci/run installs the
`crosscheck` extra into its own environment (.venv-crosscheck) and runs this directory there."""

import torch
import torchattacks

from spikeguard.attacks import pgd
from spikeguard.data import load_dataset
from spikeguard.models import ModelSpec, create_model
from spikeguard.runtime import eval_mode


def tiny_model_and_batch():
    data = load_dataset("digits", seed=0)
    x = torch.stack([a for a, _ in data.train])
    y = torch.tensor([int(b) for _, b in data.train])
    torch.manual_seed(0)
    model = create_model(ModelSpec(name="digits_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0.3,),
                                   std=(0.4,), time_steps=4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for i in range(0, len(y), 64):
        loss = torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = data.test
    return model.eval(), torch.stack([test[i][0] for i in range(16)]), torch.tensor([int(test[i][1]) for i in range(16)])


def test_pgd_matches_torchattacks_on_the_same_seed():
    model, x, y = tiny_model_and_batch()
    eps, alpha, steps = 0.1, 0.02, 5
    torch.manual_seed(7)
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    with eval_mode(model):
        ours = pgd(model, x, y, eps, alpha, steps, random_start=True, generator=torch.Generator().manual_seed(7),
                   keep_best=False)
    assert (ours - theirs).abs().max().item() <= 1e-6
