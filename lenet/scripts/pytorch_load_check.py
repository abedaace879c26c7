"""Checks the README's PyTorch snippet against a lenet checkpoint.

Runs the README's own ```python block (so the README stays true) with the
model, activation, pooling and dropout the checkpoint's metadata names,
loads the checkpoint with a strict load_state_dict, evaluates it on the
Fashion-MNIST test set in evaluation mode and prints the accuracy, to
compare with `lenet eval --load CHECKPOINT`. Needs torch, safetensors and
numpy (not part of the build or CI; `make peers` makes a venv with torch):

    python3 lenet/scripts/pytorch_load_check.py CHECKPOINT [DATA_DIR]
"""

import gzip
import os
import re
import sys

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

here = os.path.dirname(os.path.abspath(__file__))
readme = open(os.path.join(here, "..", "..", "README.md"), encoding="utf-8").read()
snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)

checkpoint = sys.argv[1]
data = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
with safe_open(checkpoint, "pt") as f:
    meta = f.metadata()
model_name = meta.get("model", "lenet5")
act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[meta["activation"]]
pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[meta["pool"]]
dropout = float(meta.get("dropout", "0"))

# The README's snippet, with its file name and default model swapped for the checkpoint's.
snippet = snippet.replace('"lenet.safetensors"', repr(checkpoint))
snippet = re.sub(r"^model = Net\(\).*$", "model = Net(model_name, act, pool, dropout)", snippet, flags=re.M)
scope = {"model_name": model_name, "act": act, "pool": pool, "dropout": dropout}
exec(snippet, scope)
model = scope["model"]
print(f"load_state_dict (strict): {model_name}, {meta['activation']} + {meta['pool']}, dropout {dropout}")


def idx(name):
    for candidate in (name + ".gz", name):
        path = os.path.join(data, candidate)
        if os.path.exists(path):
            raw = open(path, "rb").read()
            return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    raise SystemExit(f"{name} not found in {data}")


images = np.frombuffer(idx("t10k-images-idx3-ubyte"), np.uint8, offset=16).reshape(-1, 1, 28, 28)
labels = np.frombuffer(idx("t10k-labels-idx1-ubyte"), np.uint8, offset=8)
assert not model.training, "the snippet leaves the model in evaluation mode"
with torch.no_grad():
    logits = model(torch.from_numpy(images.astype(np.float32) / 255.0))
accuracy = (logits.argmax(1).numpy() == labels).mean()
print(f"PyTorch test accuracy {accuracy:.4f} on {len(labels)} images")
