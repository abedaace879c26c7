"""A fake PyTorch peer for the harness's peer tests: plain python3, no torch.

It speaks harness/peers/torch_ops.py's protocol (see that script) and
computes the linear ops in pure Python (only small linear shapes are sent
to it), so the plumbing (start, hello, compute, validate, time, records,
notes) is tested on every machine. FAKE_PEER_MODE (or the script's name,
fake_peer_<mode>.py) changes its behaviour:
  (unset)   correct outputs
  wrong     one output element off by 1.0 (the harness must refuse to time it)
  no-torch  answers hello as torch_ops.py does when torch is not importable
"""

import array
import json
import os
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
        if req["family"] != "linear":
            raise ValueError(f"the fake peer computes linear ops only, not {req['op']}")
        start = time.perf_counter()
        outputs = linear(req)
        took = time.perf_counter() - start
        if MODE == "wrong":
            first = next(iter(outputs))
            outputs[first][0][0] += 1.0
        written = {k: write(v, s, os.path.join(req["out_dir"], f"{k}.f32")) for k, (v, s) in outputs.items()}
        stats = {"repeats": 1, "median_s": took, "min_s": took, "max_s": took} if cmd == "time" else None
        reply({"ok": True, "outputs": written, "stats": stats})
    except Exception as e:
        reply({"ok": False, "error": f"{type(e).__name__}: {e}"})
