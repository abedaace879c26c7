"""A fake PyTorch peer for the harness's peer tests: plain python3, no torch.

It speaks harness/peers/torch_ops.py's protocol (see that script) and
computes the linear, pooling (max and average), batch-norm and dropout ops
in pure Python (only small shapes are sent to it), so the plumbing (start,
hello, compute, validate, time, records, notes) is tested on every machine.
Its dropout draws its own mask (Python's random), as PyTorch does: the
harness can only check the pattern. FAKE_PEER_MODE (or the script's name,
fake_peer_<mode>.py) changes its behaviour:
  (unset)   correct outputs
  wrong     one output element off by 1.0 (the harness must refuse to time it)
  keep-all  dropout keeps every element (scaled right, but p is ignored)
  no-torch  answers hello as torch_ops.py does when torch is not importable

A "lenet" request is checked (the model's parameter names, order and shapes
as lenet's README defines them in PyTorch, batch norm's running statistics,
the batches, every epoch order a permutation) and answered with a step-0
loss of 0.0, which the harness must refuse: without torch the fake cannot
train, and any malformed request is answered with an error naming it.
"""

import array
import json
import math
import os
import random
import sys
import time

# The mode comes from the environment or from the script's name
# (fake_peer_wrong.py), so tests running in parallel need no shared variable.
_STEM = os.path.splitext(os.path.basename(__file__))[0]
MODE = os.environ.get("FAKE_PEER_MODE") or (_STEM[len("fake_peer_"):] if _STEM.startswith("fake_peer_") else "")


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read(spec):
    a = array.array("f")
    with open(spec["path"], "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    return list(a), spec["shape"]


def write(values, shape, path):
    a = array.array("f", values)
    if sys.byteorder != "little":
        a.byteswap()
    with open(path, "wb") as f:
        f.write(a.tobytes())
    return {"path": path, "shape": shape}


def linear(req):
    (x, (n, i)), (w, (o, _)) = read(req["inputs"]["x"]), read(req["inputs"]["w"])
    if req["op"] == "linear-fwd":
        b, _ = read(req["inputs"]["b"])
        y = [b[k] + sum(x[r * i + c] * w[k * i + c] for c in range(i)) for r in range(n) for k in range(o)]
        return {"y": (y, [n, o])}
    dy, _ = read(req["inputs"]["dy"])
    dx = [sum(dy[r * o + k] * w[k * i + c] for k in range(o)) for r in range(n) for c in range(i)]
    dw = [sum(dy[r * o + k] * x[r * i + c] for r in range(n)) for k in range(o) for c in range(i)]
    db = [sum(dy[r * o + k] for r in range(n)) for k in range(o)]
    return {"dx": (dx, [n, i]), "dw": (dw, [o, i]), "db": (db, [o])}


def pool(req):
    (x, (n, c, h, w)), (dy, (_, _, oh, ow)) = read(req["inputs"]["x"]), read(req["inputs"]["dy"])
    p = req["params"]
    k, s, pad, avg = p["window"], p["stride"], p["padding"], p["kind"] == "avg"

    def window(plane, i, j):
        """Flat indices of the window of output (i, j) that lie inside the plane."""
        rows = [r for r in range(i * s - pad, i * s - pad + k) if 0 <= r < h]
        cols = [q for q in range(j * s - pad, j * s - pad + k) if 0 <= q < w]
        return [plane * h * w + r * w + q for r in rows for q in cols]

    forward = req["op"].endswith("-fwd")
    y, dx = [], [0.0] * len(x)
    for plane in range(n * c):
        for i in range(oh):
            for j in range(ow):
                idx = window(plane, i, j)
                g = dy[(plane * oh + i) * ow + j]
                if avg:
                    # Padding counts in the divisor (count_include_pad).
                    if forward:
                        y.append(sum(x[t] for t in idx) / (k * k))
                    else:
                        for t in idx:
                            dx[t] += g / (k * k)
                else:
                    best = max(idx, key=lambda t: (x[t], -t))  # the first maximum wins
                    if forward:
                        y.append(x[best])
                    else:
                        dx[best] += g
    return {"y": (y, [n, c, oh, ow])} if forward else {"dx": (dx, [n, c, h, w])}


def norm(req):
    (x, shape), (dy, _) = read(req["inputs"]["x"]), read(req["inputs"]["dy"])
    p = req["params"]
    n, c = shape[0], shape[1]
    spatial = len(x) // (n * c)
    m = n * spatial
    op = req["op"]

    def channel(i):
        return (i // spatial) % c

    if op.startswith("dropout"):
        src = x if op == "dropout-fwd" else dy
        rng = random.Random(len(src))
        keep = (lambda: True) if MODE == "keep-all" else (lambda: rng.random() >= p["p"])
        out = [v / (1.0 - p["p"]) if keep() else 0.0 for v in src]
        return {"y" if op == "dropout-fwd" else "dx": (out, shape)}
    (gamma, _), (beta, _) = read(req["inputs"]["w"]), read(req["inputs"]["b"])
    (rm, _), (rv, _) = read(req["inputs"]["running_mean"]), read(req["inputs"]["running_var"])
    eps, momentum = p["eps"], p["momentum"]
    if op == "bn-eval":
        y = [gamma[channel(i)] * (v - rm[channel(i)]) / math.sqrt(rv[channel(i)] + eps) + beta[channel(i)]
             for i, v in enumerate(x)]
        return {"y": (y, shape)}
    if op == "bn-train":
        sums, squares = [0.0] * c, [0.0] * c
        for i, v in enumerate(x):
            sums[channel(i)] += v
        mean = [t / m for t in sums]
        for i, v in enumerate(x):
            squares[channel(i)] += (v - mean[channel(i)]) ** 2
        var = [t / m for t in squares]
        inv = [1.0 / math.sqrt(v + eps) for v in var]
        y = [gamma[channel(i)] * (v - mean[channel(i)]) * inv[channel(i)] + beta[channel(i)] for i, v in enumerate(x)]
        new_rm = [(1 - momentum) * a + momentum * b for a, b in zip(rm, mean)]
        new_rv = [(1 - momentum) * a + momentum * b * m / (m - 1) for a, b in zip(rv, var)]
        return {"y": (y, shape), "mean": (mean, [c]), "inv_std": (inv, [c]),
                "running_mean": (new_rm, [c]), "running_var": (new_rv, [c])}
    if op == "bn-bwd":
        (mean, _), (inv, _) = read(req["inputs"]["save_mean"]), read(req["inputs"]["save_invstd"])
        xhat = [(v - mean[channel(i)]) * inv[channel(i)] for i, v in enumerate(x)]
        dbeta, dgamma = [0.0] * c, [0.0] * c
        for i, g in enumerate(dy):
            dbeta[channel(i)] += g
            dgamma[channel(i)] += g * xhat[i]
        dx = [gamma[channel(i)] * inv[channel(i)] * (g - dbeta[channel(i)] / m - xhat[i] * dgamma[channel(i)] / m)
              for i, g in enumerate(dy)]
        return {"dx": (dx, shape), "dgamma": (dgamma, [c]), "dbeta": (dbeta, [c])}
    raise ValueError(f"unknown norm op {op}")



def lenet_expected(model):
    """(name, shape) of every parameter and running statistic, in state_dict order."""
    convs, dense = {
        "lenet5": ([(1, 6, 5), (6, 16, 5)], [400, 120, 84, 10]),
        "lenet5-bn": ([(1, 6, 5), (6, 16, 5)], [400, 120, 84, 10]),
        "mxnet-lenet": ([(1, 20, 5), (20, 50, 3)], [1250, 128, 10]),
        "simplecnn": ([(1, 30, 5)], [4320, 100, 10]),
    }[model]
    bn = model == "lenet5-bn"
    params, running = [], []
    for i, (c, k, r) in enumerate(convs, 1):
        params += [(f"conv{i}.weight", [k, c, r, r]), (f"conv{i}.bias", [k])]
        if bn:
            params += [(f"bn{i}.weight", [k]), (f"bn{i}.bias", [k])]
            running += [(f"bn{i}.running_mean", [k]), (f"bn{i}.running_var", [k])]
    for j, (i, o) in enumerate(zip(dense, dense[1:]), 1):
        params += [(f"fc{j}.weight", [o, i]), (f"fc{j}.bias", [o])]
        if bn and j < len(dense) - 1:
            n = len(convs) + j
            params += [(f"bn{n}.weight", [o]), (f"bn{n}.bias", [o])]
            running += [(f"bn{n}.running_mean", [o]), (f"bn{n}.running_var", [o])]
    return params, running


def check_size(spec):
    count = 1
    for d in spec["shape"]:
        count *= d
    size = os.path.getsize(spec["path"])
    if size != 4 * count:
        raise ValueError(f"{spec['path']}: {size} bytes for shape {spec['shape']}")


def lenet(req):
    params, running = lenet_expected(req["model"])
    for sent, want in ((req["params"], params), (req["running"], running)):
        got = [(s["name"], s["shape"]) for s in sent]
        if got != want:
            raise ValueError(f"{req['model']}: sent {got}, the model has {want}")
        for spec in sent:
            check_size(spec)
    batch, total = req["batch"], req["warmup_steps"] + req["steps"]
    if req["x"]["shape"] != [total * batch, 1, 28, 28] or req["labels"]["shape"] != [total * batch]:
        raise ValueError(f"batches {req['x']['shape']} / {req['labels']['shape']} for {total} steps of {batch}")
    for spec in (req["x"], req["labels"]):
        check_size(spec)
    trained = None
    train = req.get("train")
    if train:
        n = train["x"]["shape"][0]
        orders, _ = read(train["orders"])
        for e in range(train["epochs"]):
            if sorted(int(i) for i in orders[e * n:(e + 1) * n]) != list(range(n)):
                raise ValueError(f"epoch {e + 1}'s order is not a permutation of the {n} examples")
        if len(orders) != train["epochs"] * n:
            raise ValueError(f"{len(orders)} order entries for {train['epochs']} epochs of {n}")
        trained = {"test_accuracy": 0.5, "test_loss": 1.0, "train_seconds": 0.01}
    return {"seconds": 0.01, "examples_per_s": req["steps"] * batch / 0.01, "initial_loss": 0.0,
            "first_loss": 0.0, "last_loss": 0.0, "trained": trained}


COMPUTE = {"linear": linear, "pool": pool, "norm": norm}

for line in sys.stdin:
    req = json.loads(line)
    cmd = req["cmd"]
    if cmd == "quit":
        break
    if cmd == "hello":
        if MODE == "no-torch":
            reply({"ok": False, "error": "torch is not importable by fake: No module named 'torch'"})
            break
        threads = req["threads"]
        reply({"ok": True, "peer": "pytorch", "version": "0.0-fake", "threads": threads,
               "python": sys.version.split()[0], "detail": f"fake peer, {threads} threads"})
        continue
    try:
        if cmd == "lenet":
            reply(dict(ok=True, **lenet(req)))
            continue
        if req["family"] not in COMPUTE:
            raise ValueError(f"the fake peer computes linear, pool and norm ops only, not {req['op']}")
        start = time.perf_counter()
        outputs = COMPUTE[req["family"]](req)
        took = time.perf_counter() - start
        if MODE == "wrong":
            first = next(iter(outputs))
            outputs[first][0][0] += 1.0
        written = {k: write(v, s, os.path.join(req["out_dir"], f"{k}.f32")) for k, (v, s) in outputs.items()}
        stats = {"repeats": 1, "median_s": took, "min_s": took, "max_s": took} if cmd == "time" else None
        reply({"ok": True, "outputs": written, "stats": stats})
    except Exception as e:
        reply({"ok": False, "error": f"{type(e).__name__}: {e}"})
