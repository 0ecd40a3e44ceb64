import pytest
import torch

from oldphoto.train.chunked import chunked


def test_chunks_cover_every_row_once_in_order():
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10.0, 20.0).view(10, 1)
    sizes = []

    def fn(a, b):
        sizes.append(len(a))
        return a + b

    assert torch.equal(chunked(fn, 4, x, y), x + y)
    assert sizes == [4, 4, 2]


def test_model_runs_in_eval_mode_and_gets_its_flag_back():
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(2))
    modes = []
    net.register_forward_hook(lambda m, i, o: modes.append(m.training))
    out = chunked(net, 3, torch.randn(5, 2), model=net)
    assert modes == [False, False] and net.training and not out.requires_grad
    net.eval()
    chunked(net, 3, torch.randn(5, 2), model=net)
    assert not net.training


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match=r"\[3, 4\]"):
        chunked(lambda a, b: a, 2, torch.zeros(3), torch.zeros(4))
