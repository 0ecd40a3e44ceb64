import pytest
import torch

from oldphoto.archs import build


def _net():
    torch.manual_seed(0)
    return build("unet_detector", channels=(4, 8, 8), blocks=1).eval()


def test_any_size_gray_or_rgb_gives_the_same_logits():
    net = _net()
    g = torch.rand(1, 1, 37, 50)
    with torch.no_grad():
        a = net(g)
        b = net(g.expand(1, 3, 37, 50))
    assert a.shape == (1, 1, 37, 50)
    assert torch.allclose(a, b, atol=1e-5)


def test_interior_response_does_not_depend_on_the_crop_origin():
    """Replicate padding keeps the net translation-consistent away from the borders (tile seams)."""
    net = _net()
    img = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        full = net(img)
        shifted = net(img[..., 8:, 8:])  # 56 px: padded internally to 56 (multiple of 4)
    # receptive field of this tiny net is < 16 px: the centre must match closely
    assert torch.allclose(full[..., 24:48, 24:48], shifted[..., 16:40, 16:40], atol=1e-4)


def test_rejects_wrong_channel_count_with_shape_in_message():
    with pytest.raises(ValueError, match=r"\(1, 2, 8, 8\)"):
        _net()(torch.rand(1, 2, 8, 8))


def test_chroma_detector_sees_colour_and_zero_chroma_for_gray():
    torch.manual_seed(0)
    net = build("unet_detector", channels=(4, 8, 8), blocks=1, chroma=True).eval()
    gray = torch.rand(1, 1, 32, 32)
    neutral = torch.rand(1, 3, 32, 32)
    tinted = neutral.clone()
    tinted[:, 0] += 0.1
    tinted[:, 2] -= 0.1 * 0.299 / 0.114  # same luma, other colour
    with torch.no_grad():
        assert torch.allclose(net(gray), net(gray.expand(1, 3, 32, 32)), atol=1e-5)
        assert not torch.allclose(net(neutral), net(tinted), atol=1e-3)


def test_widening_a_luma_detector_keeps_its_output_exactly():
    from oldphoto.archs.unet_detector import widen_to_chroma
    torch.manual_seed(0)
    luma_net = build("unet_detector", channels=(4, 8, 8), blocks=1).eval()
    wide = build("unet_detector", channels=(4, 8, 8), blocks=1, chroma=True).eval()
    wide.load_state_dict(widen_to_chroma(luma_net.state_dict()))
    x = torch.rand(2, 3, 40, 24)
    with torch.no_grad():
        assert torch.equal(luma_net(x), wide(x))
    assert widen_to_chroma(wide.state_dict())["enc.0.0.weight"].shape[1] == 3  # already wide: unchanged
    with pytest.raises(ValueError, match=r"\(4, 2, 3, 3\)"):
        widen_to_chroma({"enc.0.0.weight": torch.zeros(4, 2, 3, 3)})


def test_widening_the_channels_keeps_the_output_and_lets_new_channels_learn():
    from oldphoto.archs.unet_detector import widen_channels
    torch.manual_seed(0)
    narrow = build("unet_detector", channels=(4, 8, 8), blocks=2, chroma=True)
    for m in narrow.modules():  # trained-looking BatchNorm, so the test sees its statistics carried over
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.3, 0.3)
    wide = build("unet_detector", channels=(6, 12, 16), blocks=2, chroma=True)
    wide.load_state_dict(widen_channels(narrow.state_dict(), wide.state_dict()))
    x = torch.rand(2, 3, 40, 24)
    narrow.eval(), wide.eval()
    with torch.no_grad():
        assert torch.allclose(narrow(x), wide(x), atol=1e-5)
    wide.train()
    wide(x).mean().backward()
    grad = wide.head.weight.grad[0, :, 0, 0]
    assert bool(grad[4:].abs().gt(0).any())  # the new channels' way out is trainable
    with pytest.raises(ValueError, match="does not fit"):
        widen_channels(wide.state_dict(), narrow.state_dict())
