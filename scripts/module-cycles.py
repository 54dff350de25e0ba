#!/usr/bin/env python3
"""Finds import circles between the modules of each Kith crate.

Reads every `src/**/*.rs` of a crate, resolves each `crate::…`, `super::…` and `self::…` path
(including grouped `use crate::{a::X, b::{Y, Z}}`) to the module that defines it, and reports
every strongly connected set of sibling modules: `a` uses `b` and `b` (or something below it)
uses `a`. Uses between a module and its own ancestors or descendants are not circles (a child
naming its parent's types is how Rust modules are built). Exits 1 when it finds a circle.

Usage: scripts/module-cycles.py [crate-dir ...]   (default: every crate of the workspace)
"""

import os
import re
import sys

CRATES = ["protocol", "protocol/net", "node", "bootstrap", "tests"]
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def strip_comments_and_strings(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r'b?"(?:\\.|[^"\\])*"', '""', text)
    return text


def module_files(src):
    """Maps module path tuples to files for one crate's src/ (lib and bin roots are roots)."""
    mods = {}
    for root, _dirs, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)
            parts = rel[:-3].split(os.sep)
            if parts[0] == "bin" or parts[-1] in ("lib", "main") and len(parts) == 1:
                if parts[0] == "bin":
                    continue
                mods[()] = mods.get((), []) + [path]
                continue
            if parts[-1] == "mod":
                parts = parts[:-1]
            mods.setdefault(tuple(parts), []).append(path)
    return mods


def expand(text, i):
    """Parses a path tree starting at text[i] (after `crate::` etc.); returns (paths, end)."""
    paths = []
    while i < len(text) and text[i].isspace():
        i += 1
    if i < len(text) and text[i] == "{":
        i += 1
        while True:
            sub, i = expand(text, i)
            paths.extend(sub)
            while i < len(text) and text[i].isspace():
                i += 1
            if i >= len(text) or text[i] == "}":
                return paths, i + 1
            if text[i] == ",":
                i += 1
                while i < len(text) and text[i].isspace():
                    i += 1
                if i < len(text) and text[i] == "}":
                    return paths, i + 1
            else:
                return paths, i
    m = IDENT.match(text, i)
    if not m:
        return [[]], i
    head = m.group(0)
    i = m.end()
    if text.startswith("::", i):
        subs, i = expand(text, i + 2)
        return [[head] + s for s in subs], i
    return [[head]], i


def resolve(mods, here, prefix, rest):
    if prefix == "crate":
        base = ()
    elif prefix == "self":
        base = here
    else:  # super (possibly repeated in rest)
        base = here[:-1]
        while rest and rest[0] == "super":
            base = base[:-1]
            rest = rest[1:]
    target = base
    for seg in rest:
        if target + (seg,) in mods:
            target = target + (seg,)
        else:
            break
    return target


def edges_of(mods):
    edges = {}
    for here, files in mods.items():
        for path in files:
            with open(path, encoding="utf-8") as fh:
                text = strip_comments_and_strings(fh.read())
            for m in re.finditer(r"\b(crate|super|self)::", text):
                paths, _ = expand(text, m.end())
                for rest in paths:
                    target = resolve(mods, here, m.group(1), rest)
                    if target != here:
                        edges.setdefault((here, target), path)
    return edges


def sibling_edges(edges):
    out = {}
    for (a, b), path in edges.items():
        n = 0
        while n < len(a) and n < len(b) and a[n] == b[n]:
            n += 1
        if n == len(a) or n == len(b):
            continue  # ancestor or descendant
        parent = a[:n]
        out.setdefault(parent, {}).setdefault((a[n], b[n]), path)
    return out


def sccs(nodes, adj):
    index, low, stack, on, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                result.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return result


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(here)
    crates = sys.argv[1:] or [c for c in CRATES if os.path.isdir(os.path.join(top, c, "src"))]
    found = 0
    for crate in crates:
        src = os.path.join(top, crate, "src")
        mods = module_files(src)
        by_parent = sibling_edges(edges_of(mods))
        for parent, pairs in sorted(by_parent.items()):
            adj = {}
            nodes = set()
            for a, b in pairs:
                adj.setdefault(a, set()).add(b)
                nodes.update((a, b))
            for comp in sccs(sorted(nodes), adj):
                found += 1
                scope = "::".join(parent) or "(root)"
                print(f"{crate}: circle under {scope}: {' <-> '.join(comp)}")
                for (a, b), path in sorted(pairs.items()):
                    if a in comp and b in comp:
                        print(f"    {a} -> {b}  (e.g. {os.path.relpath(path, top)})")
        print(f"{crate}: {len(mods)} modules read")
    if found:
        print(f"{found} circle(s)")
        sys.exit(1)
    print("no import circles")


if __name__ == "__main__":
    main()
