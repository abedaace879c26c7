#!/usr/bin/env python3
"""Reports import cycles between the modules of kernels-im2col/src.

A module is a file (foo.rs, or foo/mod.rs as `foo`, foo/bar.rs as
`foo::bar`); an edge A -> B is any `crate::B...` path in A, or a
`super::B...` path, or a `child::...` path to one of A's own child
modules, outside comments and
A's `#[cfg(test)]` module (tests may reach anywhere). A parent's `mod`
declarations alone are not edges. Exits 1 and prints the cycles when there are
any. Run: python3 kernels-im2col/scripts/import_cycles.py
"""
import pathlib, re, sys

src = pathlib.Path(__file__).resolve().parent.parent / "src"
modules = {}
for path in src.rglob("*.rs"):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts = parts[:-1]
    name = "::".join(parts) if parts != ["lib"] else "crate"
    text = path.read_text()
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut < 0:
        cut = text.find('#[cfg(all(test, target_arch = "x86_64"))]\nmod tests')
    text = text if cut < 0 else text[:cut]
    modules[name] = re.sub(r"//[^\n]*", "", text)

def resolve(path):
    """The longest module name that `path` (after crate::) starts with."""
    parts = path.split("::")
    for n in range(len(parts), 0, -1):
        if "::".join(parts[:n]) in modules:
            return "::".join(parts[:n])
    return "crate"

edges = {m: set() for m in modules}
for m, text in modules.items():
    # `use crate::{a, b::c}` groups and plain `crate::a::b` paths.
    for group in re.findall(r"crate::\{([^}]*)\}", text):
        for item in re.split(r",\s*", group):
            item = item.strip()
            if item:
                edges[m].add(resolve(item.split("::{")[0]))
    for path in re.findall(r"crate::((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text):
        edges[m].add(resolve(path))
    # `super::x` paths, relative to the parent module.
    parent = m.rsplit("::", 1)[0] if "::" in m else "crate"
    for group in re.findall(r"\bsuper::\{([^}]*)\}", text):
        for item in re.split(r",\s*", group):
            if item.strip():
                edges[m].add(resolve((parent + "::" if parent != "crate" else "") + item.strip().split("::{")[0]))
    for path in re.findall(r"\bsuper::((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text):
        edges[m].add(resolve((parent + "::" if parent != "crate" else "") + path))
    # Paths through a child module: `conv::forward(...)` in lib.rs.
    prefix = "" if m == "crate" else m + "::"
    for child in re.findall(r"\bmod ([a-z_0-9]+);", text):
        if re.search(r"(?<![:\w])" + child + r"::", text):
            edges[m].add(prefix + child)
    edges[m].discard(m)

# Cycles: strongly connected components of more than one module (Tarjan).
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in modules:
    if v not in index:
        visit(v)
if "-v" in sys.argv:
    for m in sorted(edges):
        print(f"{m} -> {', '.join(sorted(edges[m]))}")
if sccs:
    for comp in sccs:
        print("import cycle:", " <-> ".join(comp))
    sys.exit(1)
print(f"no import cycle among {len(modules)} modules")
