#!/usr/bin/env python3
"""Module import graph of a crate's src/: edges from every `crate::`/`super::` path
(use statements, with brace groups expanded, and inline paths), outside #[cfg(test)] mods.
Prints cycles between top-level modules and between files (strongly connected components)."""
import os, re, sys
args = [a for a in sys.argv[1:] if a != "--strict"]
STRICT = "--strict" in sys.argv
root = args[0] if args else "src"
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith(".rs"):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3].split(os.sep)
            if rel[0] == "bin" or rel in (["main"],):
                continue
            if rel[-1] == "mod": rel = rel[:-1]
            if rel == ["lib"]: rel = []
            files[tuple(rel)] = p
mods = set(files)
def strip_tests(src):
    # drop `#[cfg(test)] mod x { ... }` blocks
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{", src):
        if m.start() < i: continue
        out.append(src[i:m.start()]); depth, j = 1, m.end()
        while depth and j < len(src):
            depth += {"{": 1, "}": -1}.get(src[j], 0); j += 1
        i = j
    out.append(src[i:]); return "".join(out)
def expand(tree):
    # "a::{b, c::{d}}" -> ["a::b", "a::c::d"]
    tree = tree.replace(" ", "").replace("\n", "")
    m = re.match(r"^([^{]*)\{(.*)\}$", tree)
    if not m: return [tree]
    pre, body = m.group(1), m.group(2); parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0: parts.append(cur); cur = ""; continue
        depth += ch == "{"; depth -= ch == "}"; cur += ch
    if cur: parts.append(cur)
    return [x for p in parts for x in expand(pre + p)]
def resolve(mod, path):
    segs = path.split("::")
    if segs[0] == "crate": base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(mod)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super": base = base[:-1]
            segs = segs[1:]
    else: return None
    best = tuple(base)
    for s in segs:
        if tuple(base + [s]) in mods: base.append(s); best = tuple(base)
        else: break
    return best
edges = {}
for mod, p in files.items():
    src = re.sub(r"//[^\n]*", "", strip_tests(open(p).read()))
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]*);", src):
        paths += expand(m.group(1))
    # `use child::x` / `pub use child::x` in a module file: relative to the module itself
    for m in re.finditer(r"\buse\s+([a-z_][a-z0-9_]*(?:::[^;]*)?);", src):
        head = m.group(1).split("::")[0]
        if head not in ("crate", "super", "self") and tuple(mod) + (head,) in mods:
            paths += ["self::" + x for x in expand(m.group(1))]
    paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", src)
    for x in paths:
        t = resolve(mod, x)
        if t is not None and t != mod and t != () and (STRICT or t != mod[:len(t)]):
            edges.setdefault(mod, set()).add(t)
def sccs(nodes, adj):
    idx, low, st, on, out, c = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def go(v):
        idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in adj.get(v, ()):
            if w not in idx: go(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(comp)
    for v in nodes:
        if v not in idx: go(v)
    return out
fmt = lambda m: "::".join(m) or "crate"
top = {}
for a, bs in edges.items():
    for b in bs:
        if a[:1] != b[:1]: top.setdefault(a[:1], set()).add(b[:1])
print("top-level modules:")
for a in sorted(top): print("  %-12s -> %s" % (fmt(a), ", ".join(sorted(fmt(b) for b in top[a]))))
ct = sccs(sorted({m[:1] for m in mods if m}), top)
cf = sccs(sorted(mods), {a: {b for b in bs if b in mods} for a, bs in edges.items()})
# a file importing its parent module's items is not a cycle through files if parent only declares it;
print("cycles between top-level modules:", [sorted(map(fmt, c)) for c in ct] or "none")
print("cycles between files:", [sorted(map(fmt, c)) for c in cf] or "none")
sys.exit(1 if ct or cf else 0)
