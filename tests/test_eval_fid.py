"""FID: the missing-Inception message (and that nothing is fetched), and the full path — CLI, weights
check, pytorch-fid's InceptionV3 replaced by a cheap stand-in, reference statistics cache, Fréchet
distance — against a hand computation on the stand-in's features."""
import json
import os

import numpy as np
import pytest
import torch

from dmcmc_fast.cli import main
from dmcmc_fast.data import load_mnist
from dmcmc_fast.eval import fid as fid_mod
from dmcmc_fast.eval.frechet import frechet_distance


class StandInInception(torch.nn.Module):
    """Mimics pytorch-fid's `InceptionV3(output_blocks)`: [B, 3, H, W] in [0, 1] -> [[B, D, 1, 1]]."""

    BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
    built_with = None

    def __init__(self, output_blocks, **_):
        super().__init__()
        StandInInception.built_with = list(output_blocks)
        self.proj = torch.randn(3 * 7 * 7, 12, generator=torch.Generator().manual_seed(1))

    def forward(self, x):
        f = torch.nn.functional.adaptive_avg_pool2d(x, 7).flatten(1) @ self.proj
        return [f[:, :, None, None]]


def stand_in_features(x):
    """The stand-in's features, computed by hand from images in [-1, 1]."""
    rgb = ((x + 1) / 2).clamp(0, 1).expand(-1, 3, -1, -1)
    return StandInInception([3])(rgb)[0].flatten(1).double()


def _np_stats(f):
    f = f.numpy()
    return f.mean(0), np.cov(f, rowvar=False)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DMCMC_FAST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _samples_npz(path, x):
    np.savez(path, samples=x.numpy(), nfe=np.full(x.shape[0], 35), config=np.array(json.dumps({})))
    return str(path)


def test_missing_inception_weights_name_file_and_folder(torch_home, tmp_path, capsys):
    with pytest.raises(fid_mod.MissingInceptionWeights) as err:
        fid_mod.fid(torch.zeros(4, 1, 28, 28), torch.zeros(4, 1, 28, 28))
    assert fid_mod.INCEPTION_FILE in str(err.value) and str(torch_home) in str(err.value)
    path = _samples_npz(tmp_path / "s.npz", load_mnist()[0][:8])
    assert main(["eval", path, "--fid", "--no-features"]) == 2
    msg = capsys.readouterr().err
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and str(torch_home) in msg
    assert not torch_home.exists() or not os.listdir(torch_home)  # nothing was fetched


def test_fid_full_path_with_stand_in_network(torch_home, tmp_path, monkeypatch, capsys):
    torch_home.mkdir(parents=True)
    (torch_home / fid_mod.INCEPTION_FILE).write_bytes(b"stand-in")  # only its presence is checked
    import pytorch_fid.inception

    monkeypatch.setattr(pytorch_fid.inception, "InceptionV3", StandInInception)
    x = load_mnist()[0]
    samples = (x[:300] + 0.3 * torch.randn(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    path = _samples_npz(tmp_path / "s.npz", samples)

    assert main(["eval", path, "--fid", "--no-features"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert StandInInception.built_with == [3]  # pool3 block, 2048-d in the real network
    expect = frechet_distance(*_np_stats(stand_in_features(samples)), *_np_stats(stand_in_features(x)))
    assert report["fid"] == pytest.approx(expect, rel=1e-6)
    assert report["fid"] > 1.0  # noisy digits are far from real ones in this space
    cached = tmp_path / "cache" / "fid-mnist-5000.npz"
    assert cached.exists()  # reference statistics: computed once, then read
    assert main(["eval", path, "--fid", "--no-features", "--fid-ref", str(cached)]) == 0
    assert json.loads(capsys.readouterr().out)["fid"] == pytest.approx(expect, rel=1e-6)
    # real digits against the real statistics: near zero (sampling error only)
    assert fid_mod.fid(x[::2], str(cached)) < 0.05 * expect


def test_fid_rejects_mismatched_reference():
    with pytest.raises(ValueError, match="shape"):
        fid_mod.fid(torch.zeros(4, 1, 8, 8), "mnist", net=lambda b: b.flatten(1))
    with pytest.raises(ValueError, match=r"\[N, 1 or 3, H, W\]"):
        fid_mod.to_unit_rgb(torch.zeros(4, 2, 8, 8))
