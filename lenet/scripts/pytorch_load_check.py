"""Checks the README's PyTorch snippet against a lenet checkpoint.

Runs the README's own ```python block (so the README stays true), loads the
checkpoint into its LeNet with load_state_dict, evaluates it on the
Fashion-MNIST test set and prints the accuracy, to compare with
`lenet eval --load CHECKPOINT`. Needs torch, safetensors and numpy (not
part of the build or CI):

    python3 lenet/scripts/pytorch_load_check.py CHECKPOINT [relu|sigmoid] [max|avg] [DATA_DIR]
"""

import gzip
import os
import re
import sys

import numpy as np
import torch
from torch import nn

here = os.path.dirname(os.path.abspath(__file__))
readme = open(os.path.join(here, "..", "..", "README.md"), encoding="utf-8").read()
snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)

checkpoint = sys.argv[1]
act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[sys.argv[2] if len(sys.argv) > 2 else "relu"]
pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[sys.argv[3] if len(sys.argv) > 3 else "max"]
data = sys.argv[4] if len(sys.argv) > 4 else os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")

# The README's snippet, with its file name and default variant swapped for ours.
snippet = snippet.replace('"lenet.safetensors"', repr(checkpoint)).replace("model = LeNet()", "model = LeNet(act, pool)")
scope = {"act": act, "pool": pool}
exec(snippet, scope)
model = scope["model"]
print("load_state_dict: missing", scope["missing"], "unexpected", len(scope["unexpected"]), "optimiser tensors")


def idx(name):
    for candidate in (name + ".gz", name):
        path = os.path.join(data, candidate)
        if os.path.exists(path):
            raw = open(path, "rb").read()
            return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    raise SystemExit(f"{name} not found in {data}")


images = np.frombuffer(idx("t10k-images-idx3-ubyte"), np.uint8, offset=16).reshape(-1, 1, 28, 28)
labels = np.frombuffer(idx("t10k-labels-idx1-ubyte"), np.uint8, offset=8)
model.eval()
with torch.no_grad():
    logits = model(torch.from_numpy(images.astype(np.float32) / 255.0))
accuracy = (logits.argmax(1).numpy() == labels).mean()
print(f"PyTorch test accuracy {accuracy:.4f} on {len(labels)} images")
