"""PyTorch CPU peer of the harness: times PyTorch's own kernels on the inputs
the harness sends, and writes back their outputs so the harness can validate
them against its f64 reference before it uses any time.

Protocol (one JSON object per line; requests on stdin, replies on stdout;
nothing else is ever printed to stdout):

  {"cmd": "hello", "threads": 2}
      -> {"ok": true, "peer": "pytorch", "version": "2.15.0", "threads": 2,
          "python": "3.11.7", "detail": "..."}
      -> {"ok": false, "error": "torch is not importable: ..."}   (then exit)
  {"cmd": "compute" | "time", "family": "conv" | "pool" | "linear" | "norm",
   "params": {"stride": 1, "padding": 0} | {"window": 2, "stride": 2, "padding": 0, "kind": "max" | "avg"} | {}
             | {"eps": 1e-5, "momentum": 0.1, "p": 0.5}   (norm: batch norm and dropout)
   "inputs": {"x": {"path": "...", "shape": [..]}, "w": ..., "b": ..., "dy": ...},
   "op": "conv-fwd", "policy": {"warmup_s", "min_repeats", "min_time_s", "time_cap_s", "max_repeats"},
   "out_dir": "..."}
      -> {"ok": true, "outputs": {"y": {"path": "...", "shape": [..]}},
          "stats": {"repeats", "median_s", "min_s", "max_s"}}   (stats only for "time")
  {"cmd": "lenet", "model": "lenet5" | "lenet5-bn" | "mxnet-lenet" | "simplecnn", "activation": "relu",
   "pool": "max", "dropout": null | 0.5,
   "x": {"path", "shape": [steps_total * batch, 1, 28, 28]},
   "labels": {"path", "shape": [steps_total * batch]}   (labels as f32 values 0..9)
   "params": [{"name", "path", "shape"}, ...]   lenet's own initial weights, state_dict names and order
   "running": [{"name", "path", "shape"}, ...]  batch norm's running_mean / running_var (or [])
   "batch": 256, "warmup_steps": 3, "steps": 20, "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8,
   "train": null | {"epochs": 2, "x", "labels" (the whole training set), "orders" (epochs x n indices,
                    as f32), "test_x", "test_labels"}}
      -> {"ok": true, "seconds": 1.2, "examples_per_s": 4000.0, "initial_loss": 2.31 (first batch, before
          any update, training mode, dropout off: the harness checks it against its f64 reference),
          "first_loss": 2.2, "last_loss": 1.9 (first and last timed step),
          "trained": null | {"test_accuracy": 0.87, "test_loss": 0.35, "train_seconds": 30.2}}
  {"cmd": "quit"}

Inputs and outputs are raw little-endian float32 files (C order), so large
tensors never pass through JSON. "compute" runs the op once and writes its
outputs (validated before any timing); "time" warms up, times the op under
the harness's repeat policy and writes the outputs of the last timed call.

Ops: conv-fwd, conv-bwd (dx, dw, db in one call), conv-dx, conv-dw (each
alone, through aten.convolution_backward's output mask, what autograd calls),
conv-db (dy.sum over batch and space), pool-fwd, pool-bwd (max pooling; the backward reuses the forward's
indices, as autograd does), avgpool-fwd, avgpool-bwd (F.avg_pool2d and
aten.avg_pool2d_backward with count_include_pad=True: the divisor counts
padding, as the harness's contract does; a peer that did not would fail
validation on resnet-p0), linear-fwd, linear-bwd (the three matmuls autograd
runs for F.linear), bn-train (aten.native_batch_norm in training mode, the
kernel F.batch_norm runs on the CPU, called directly because it also returns
the saved mean and inverse std the harness validates; the running statistics
are cloned from the inputs inside each call, as the harness re-uploads
ours), bn-eval (F.batch_norm, training=False), bn-bwd
(aten.native_batch_norm_backward from the harness's saved statistics: the
call autograd's batch-norm backward makes), dropout-fwd (F.dropout,
training=True) and dropout-bwd (aten.native_dropout_backward with a mask
drawn once by aten.native_dropout, as autograd does). PyTorch's dropout mask
is its own: the harness checks its pattern (each value 0 or 2x, the kept
fraction near 1 - p), not the values.
"""

import json
import os
import platform
import sys
import time


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_tensor(torch, spec):
    count = 1
    for d in spec["shape"]:
        count *= d
    with open(spec["path"], "rb") as f:
        raw = bytearray(f.read())
    if len(raw) != 4 * count:
        raise ValueError(f"{spec['path']}: {len(raw)} bytes, expected {4 * count} for shape {spec['shape']}")
    t = torch.frombuffer(raw, dtype=torch.float32)
    if sys.byteorder != "little":
        t = t.view(torch.int32).byteswap().view(torch.float32)
    return t.reshape(spec["shape"]).clone()


def write_tensor(torch, t, path):
    t = t.detach().to(torch.float32).contiguous()
    with open(path, "wb") as f:
        f.write(t.view(torch.uint8).numpy().tobytes() if _has_numpy() else bytes(t.view(torch.uint8).tolist()))
    return {"path": path, "shape": list(t.shape)}


_NUMPY = None


def _has_numpy():
    global _NUMPY
    if _NUMPY is None:
        try:
            import numpy  # noqa: F401

            _NUMPY = True
        except Exception:
            _NUMPY = False
    return _NUMPY


def make_call(torch, req):
    """Returns (call, names): call() runs the op once and returns its outputs
    in the harness's order (names)."""
    F = torch.nn.functional
    aten = torch.ops.aten
    op, params = req["op"], req.get("params", {})
    ins = {k: read_tensor(torch, v) for k, v in req["inputs"].items()}
    x, w, b, dy = ins.get("x"), ins.get("w"), ins.get("b"), ins.get("dy")
    family = req["family"]
    if family == "conv":
        stride, padding = [params["stride"]] * 2, [params["padding"]] * 2
        if op == "conv-fwd":
            return (lambda: [F.conv2d(x, w, b, stride, padding)]), ["y"]
        if op == "conv-db":
            # db alone is dy summed over batch and space: what a PyTorch user
            # writes, and far faster than convolution_backward with only the
            # bias in its mask (measured: 10 ms against 0.03 ms on lenet-c2,
            # 1 thread), which runs the convolution machinery anyway.
            return (lambda: [dy.sum((0, 2, 3))]), ["db"]
        masks = {
            "conv-bwd": ([True, True, True], ["dx", "dw", "db"]),
            "conv-dx": ([True, False, False], ["dx"]),
            "conv-dw": ([False, True, False], ["dw"]),
        }
        if op not in masks:
            raise ValueError(f"unknown conv op {op}")
        mask, names = masks[op]
        bias_sizes = [w.shape[0]]

        def conv_bwd():
            grads = aten.convolution_backward(dy, x, w, bias_sizes, stride, padding, [1, 1], False, [0, 0], 1, mask)
            return [g for g, wanted in zip(grads, mask) if wanted]

        return conv_bwd, names
    if family == "pool":
        k, s, p = params["window"], params["stride"], params["padding"]
        if op.startswith("avgpool") or params.get("kind") == "avg":
            if op in ("avgpool-fwd", "pool-fwd"):
                return (lambda: [F.avg_pool2d(x, k, s, p, ceil_mode=False, count_include_pad=True)]), ["y"]
            return (lambda: [aten.avg_pool2d_backward(dy, x, [k, k], [s, s], [p, p], False, True, None)]), ["dx"]
        if op == "pool-fwd":
            return (lambda: [F.max_pool2d(x, k, s, p)]), ["y"]
        if op == "pool-bwd":
            _, indices = aten.max_pool2d_with_indices(x, [k, k], [s, s], [p, p])
            return (
                lambda: [aten.max_pool2d_with_indices_backward(dy, x, [k, k], [s, s], [p, p], [1, 1], False, indices)]
            ), ["dx"]
        raise ValueError(f"unknown pool op {op}")
    if family == "norm":
        eps, momentum, p = params["eps"], params["momentum"], params["p"]
        gamma, beta = w, b
        rm, rv = ins.get("running_mean"), ins.get("running_var")
        if op == "bn-train":

            def bn_train():
                m, v = rm.clone(), rv.clone()
                y, mean, invstd = aten.native_batch_norm(x, gamma, beta, m, v, True, momentum, eps)
                return [y, mean, invstd, m, v]

            return bn_train, ["y", "mean", "inv_std", "running_mean", "running_var"]
        if op == "bn-eval":
            return (lambda: [F.batch_norm(x, rm, rv, gamma, beta, False, momentum, eps)]), ["y"]
        if op == "bn-bwd":
            mean, invstd = ins["save_mean"], ins["save_invstd"]

            def bn_bwd():
                return list(
                    aten.native_batch_norm_backward(dy, x, gamma, rm, rv, mean, invstd, True, eps, [True, True, True])
                )

            return bn_bwd, ["dx", "dgamma", "dbeta"]
        if op == "dropout-fwd":
            return (lambda: [F.dropout(x, p, training=True)]), ["y"]
        if op == "dropout-bwd":
            _, mask = aten.native_dropout(dy, p, True)
            return (lambda: [aten.native_dropout_backward(dy, mask, 1.0 / (1.0 - p))]), ["dx"]
        raise ValueError(f"unknown norm op {op}")
    if family == "linear":
        if op == "linear-fwd":
            return (lambda: [F.linear(x, w, b)]), ["y"]
        if op == "linear-bwd":
            return (lambda: [dy.mm(w), dy.t().mm(x), dy.sum(0)]), ["dx", "dw", "db"]
        raise ValueError(f"unknown linear op {op}")
    raise ValueError(f"unknown family {family}")


def time_call(call, policy):
    """The harness's repeat policy (harness/src/timing.rs): warm up, repeat
    at least min_repeats times and min_time_s, stop at time_cap_s or
    max_repeats. Returns (stats, last outputs)."""
    warm = 0.0
    while warm < policy["warmup_s"]:
        start = time.perf_counter()
        call()
        warm += time.perf_counter() - start
    samples = []
    while True:
        start = time.perf_counter()
        last = call()
        samples.append(time.perf_counter() - start)
        total = sum(samples)
        enough = len(samples) >= policy["min_repeats"] and total >= policy["min_time_s"]
        if enough or total >= policy["time_cap_s"] or len(samples) >= policy["max_repeats"]:
            break
    ordered = sorted(samples)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    return {"repeats": n, "median_s": median, "min_s": ordered[0], "max_s": ordered[-1]}, last


def lenet_net(torch, name, act, pool, dropout):
    """The network `lenet --model NAME` builds, as lenet's README writes it in
    PyTorch (same layers, same state_dict names and order)."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            convs, dense = {  # (in, out, kernel, padding) per conv; dense widths
                "lenet5": ([(1, 6, 5, 2), (6, 16, 5, 0)], [400, 120, 84, 10]),
                "lenet5-bn": ([(1, 6, 5, 2), (6, 16, 5, 0)], [400, 120, 84, 10]),
                "mxnet-lenet": ([(1, 20, 5, 0), (20, 50, 3, 0)], [1250, 128, 10]),
                "simplecnn": ([(1, 30, 5, 0)], [4320, 100, 10]),
            }[name]
            self.bn, self.convs, self.dense = name == "lenet5-bn", len(convs), len(dense) - 1
            for i, (c, k, r, p) in enumerate(convs, 1):
                setattr(self, f"conv{i}", nn.Conv2d(c, k, r, padding=p))
                if self.bn:
                    setattr(self, f"bn{i}", nn.BatchNorm2d(k))
            for j, (i, o) in enumerate(zip(dense, dense[1:]), 1):
                setattr(self, f"fc{j}", nn.Linear(i, o))
                if self.bn and j < self.dense:
                    setattr(self, f"bn{self.convs + j}", nn.BatchNorm1d(o))
            self.act, self.pool, self.drop = act(), pool(2, 2), nn.Dropout(dropout)

        def forward(self, x):
            for i in range(1, self.convs + 1):
                x = getattr(self, f"conv{i}")(x)
                x = self.pool(self.act(getattr(self, f"bn{i}")(x) if self.bn else x))
            x = torch.flatten(x, 1)
            for j in range(1, self.dense + 1):
                x = getattr(self, f"fc{j}")(self.drop(x))
                if j < self.dense:
                    x = self.act(getattr(self, f"bn{self.convs + j}")(x) if self.bn else x)
            return x

    return Net()


def lenet(torch, req):
    """LeNet training with lenet's recipe: the model req["model"] (ReLU, max
    pooling, dropout req["dropout"] before each dense layer), the weights and
    running statistics the harness sends (by state_dict name), Adam, softmax
    cross-entropy, batch norm in training mode; warm-up steps, then timed
    steps on the harness's batches. "initial_loss" is the first batch's loss
    before any update in training mode with dropout off (our masks and
    PyTorch's differ), the running statistics left as they were: the harness
    checks it against its f64 reference. With req["train"], a fresh model from
    the same weights also trains req["train"]["epochs"] epochs in the
    harness's orders and reports the test accuracy in evaluation mode."""
    nn, F = torch.nn, torch.nn.functional
    torch.set_grad_enabled(True)
    try:
        act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[req.get("activation", "relu")]
        pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[req.get("pool", "max")]
        dropout = req.get("dropout") or 0.0
        state = {spec["name"]: read_tensor(torch, spec) for spec in req["params"] + req.get("running", [])}

        def fresh():
            model = lenet_net(torch, req["model"], act, pool, dropout)
            missing, unexpected = model.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise ValueError(f"{req['model']}: missing {missing}, unexpected {unexpected}")
            names = [n for n, _ in model.named_parameters()]
            if names != [spec["name"] for spec in req["params"]]:
                raise ValueError(f"{req['model']}: parameter order {names} differs from the harness's")
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=req["lr"], betas=tuple(req["betas"]), eps=req["eps"])
            return model, opt

        def step(model, opt, xb, yb):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            return loss.item()

        model, opt = fresh()
        x = read_tensor(torch, req["x"])
        labels = read_tensor(torch, req["labels"]).to(torch.int64)
        batch, warmup, steps = req["batch"], req["warmup_steps"], req["steps"]

        # Step 0's loss, dropout off, batch statistics, buffers restored.
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        model.drop.eval()
        with torch.no_grad():
            initial_loss = F.cross_entropy(model(x[:batch]), labels[:batch]).item()
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        model.drop.train()

        for i in range(warmup):
            step(model, opt, x[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch])
        losses = []
        start = time.perf_counter()
        for i in range(warmup, warmup + steps):
            losses.append(step(model, opt, x[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch]))
        seconds = time.perf_counter() - start
        result = {"seconds": seconds, "examples_per_s": steps * batch / seconds, "initial_loss": initial_loss,
                  "first_loss": losses[0], "last_loss": losses[-1], "trained": None}

        train = req.get("train")
        if train:
            model, opt = fresh()
            tx = read_tensor(torch, train["x"])
            tl = read_tensor(torch, train["labels"]).to(torch.int64)
            orders = read_tensor(torch, train["orders"]).to(torch.int64).reshape(train["epochs"], -1)
            train_seconds = 0.0
            for epoch, order in enumerate(orders, 1):
                start = time.perf_counter()
                for b in range(0, len(order), batch):
                    idx = order[b:b + batch]
                    step(model, opt, tx[idx], tl[idx])
                took = time.perf_counter() - start
                train_seconds += took
                print(f"    lenet {req['model']} pytorch: epoch {epoch}/{train['epochs']}, {took:.1f} s",
                      file=sys.stderr, flush=True)
            vx = read_tensor(torch, train["test_x"])
            vl = read_tensor(torch, train["test_labels"]).to(torch.int64)
            model.eval()
            correct, loss_sum = 0, 0.0
            with torch.no_grad():
                for b in range(0, len(vl), 500):
                    logits = model(vx[b:b + 500])
                    loss_sum += F.cross_entropy(logits, vl[b:b + 500], reduction="sum").item()
                    correct += (logits.argmax(1) == vl[b:b + 500]).sum().item()
            result["trained"] = {"test_accuracy": correct / len(vl), "test_loss": loss_sum / len(vl),
                                 "train_seconds": train_seconds}
        return result
    finally:
        torch.set_grad_enabled(False)


def main():
    torch = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "quit":
                return
            if cmd == "hello":
                try:
                    import torch as torch_module
                except Exception as e:  # the harness notes why and goes on without this peer
                    reply({"ok": False, "error": f"torch is not importable by {sys.executable}: {e}"})
                    return
                torch = torch_module
                torch.set_num_threads(int(req["threads"]))
                torch.set_grad_enabled(False)
                detail = f"PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads"
                try:
                    detail += f", ISA {torch.backends.cpu.get_cpu_capability()}"
                except Exception:
                    pass
                reply(
                    {
                        "ok": True,
                        "peer": "pytorch",
                        "version": torch.__version__,
                        "threads": torch.get_num_threads(),
                        "python": platform.python_version(),
                        "detail": detail,
                    }
                )
                continue
            if torch is None:
                raise RuntimeError("'hello' must come first")
            if cmd == "lenet":
                reply(dict(ok=True, **lenet(torch, req)))
                continue
            call, names = make_call(torch, req)
            stats = None
            if cmd == "compute":
                outputs = call()
            elif cmd == "time":
                stats, outputs = time_call(call, req["policy"])
            else:
                raise ValueError(f"unknown command {cmd}")
            written = {
                name: write_tensor(torch, t, os.path.join(req["out_dir"], f"{name}.f32"))
                for name, t in zip(names, outputs)
            }
            reply({"ok": True, "outputs": written, "stats": stats})
        except Exception as e:
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
