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
