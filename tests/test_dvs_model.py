"""Event-frame models: the frames encoder, the small DVS CNN and VGG-11 on 2 x 48 x 48 frames, their ANN twin,
and the config rules that tie frames to time steps."""

import pytest
import torch

from spikeguard.config import TrainConfig, config_from_dict, dvs_options
from spikeguard.errors import UserError
from spikeguard.models import ModelSpec, ann_twin, create_model
from spikeguard.snn import FramesEncoder


def dvs_spec(**kw) -> ModelSpec:
    base = dict(name="dvs_cnn", num_classes=10, in_channels=2, image_size=16, mean=(0.0, 0.0), std=(1.0, 1.0),
                time_steps=3, encoder="frames")
    return ModelSpec(**{**base, **kw})


def test_frames_encoder_feeds_frame_t_at_step_t():
    x = torch.rand(4, 3, 2, 5, 5)
    enc = FramesEncoder(3, mean=(0.1, 0.2), std=(0.5, 2.0))
    out = enc(x)
    assert out.shape == (12, 2, 5, 5)
    mean, std = torch.tensor([0.1, 0.2]).view(2, 1, 1), torch.tensor([0.5, 2.0]).view(2, 1, 1)
    for t in range(3):
        for n in range(4):
            torch.testing.assert_close(out[t * 4 + n], (x[n, t] - mean) / std)


@pytest.mark.parametrize("shape", [(4, 2, 5, 5), (4, 2, 2, 5, 5)])
def test_frames_encoder_refuses_images_and_wrong_frame_counts(shape):
    with pytest.raises(ValueError, match="event frames"):
        FramesEncoder(3, mean=(0.0, 0.0), std=(1.0, 1.0))(torch.rand(*shape))


def test_ann_twin_of_a_frames_model_averages_its_frames():
    torch.manual_seed(0)
    model = create_model(dvs_spec()).eval()
    twin = ann_twin(model).eval()
    x = torch.rand(2, 3, 2, 16, 16)
    one_frame = ann_twin(create_model(dvs_spec(time_steps=1))).eval()
    one_frame.load_state_dict(model.state_dict())
    per_frame = torch.stack([one_frame(x[:, t:t + 1]) for t in range(3)]).mean(0)
    torch.testing.assert_close(twin(x), per_frame)


def test_paper_dvs_vgg11_takes_ten_frames_of_48x48():
    model = create_model(dvs_spec(name="vgg11", image_size=48, time_steps=10)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 10, 2, 48, 48)).shape == (1, 10)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 2


def test_event_config_uses_the_frames_encoder_and_one_frame_per_step():
    cfg = TrainConfig(dataset="cifar10dvs", time_steps=10).resolved()
    assert cfg.encoder == "frames" and cfg.model == "vgg11" and cfg.eps == pytest.approx(8 / 255)
    assert dvs_options(cfg.to_dict())["frames"] == 10
    assert dvs_options(TrainConfig(dataset="digits").resolved().to_dict()) is None


def test_event_data_default_to_ten_frames_and_dvs_frames_set_the_time_steps():
    assert TrainConfig(dataset="cifar10dvs").resolved().time_steps == 10
    assert TrainConfig(dataset="cifar10dvs", dvs={"frames": 6}).resolved().time_steps == 6
    assert TrainConfig(dataset="digits").resolved().time_steps == 8


@pytest.mark.parametrize("values,match", [
    ({"dataset": "cifar10dvs", "time_steps": 10, "dvs": {"frames": 8}}, "must equal time_steps"),
    ({"dataset": "cifar10dvs", "encoder": "poisson"}, "encoder must be 'frames'"),
    ({"dataset": "digits", "encoder": "frames"}, "for event data sets"),
    ({"dataset": "digits", "dvs": {"size": 32}}, "apply to cifar10dvs only"),
    ({"dataset": "cifar10dvs", "dvs": ["size", 32]}, "must be a mapping"),
    ({"dataset": "cifar10dvs", "dvs": {"no_such_option": 1}}, "no_such_option"),
])
def test_bad_event_settings_are_one_line_errors(values, match):
    with pytest.raises(UserError, match=match) as info:
        config_from_dict(values).resolved()
    assert "\n" not in str(info.value)
