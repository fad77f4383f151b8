"""The installed dependencies of medrepro (or of one of its extras) and their licences, read from
the installed distributions' metadata (``medrepro licences`` prints the table).

medrepro is MIT-licensed.  Its required dependencies are under permissive licences (MIT, BSD,
Apache-2.0, PSF, MPL-2.0, zlib/CC0 parts of numpy), with two kinds of exception named in
:data:`NOTED`: NVIDIA's CUDA libraries, which torch's CUDA wheels bring (proprietary,
redistributable under NVIDIA's licence), and docutils, through Snakemake (public domain and BSD,
some files GPL); the download extra's kaggle brings text-unidecode (Artistic License or GPL, at
the user's choice).  The GPL-3.0 decoder pylibjpeg-libjpeg is not required: the ``jpeg-lossless``
extra installs it, for DICOMs in JPEG Lossless or 12-bit JPEG Extended.
"""
from __future__ import annotations

import importlib.metadata as md
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# dependencies whose licence names the GPL or is proprietary, and why that is acceptable
NOTED = {
    "text-unidecode": "through kaggle (download extra); Artistic License or GPL, taken under the Artistic License",
    "docutils": "through Snakemake; public domain and BSD-2-Clause, a few files GPL (docutils' COPYING)",
    "nvidia-*": "torch's CUDA wheels; NVIDIA's proprietary, redistributable licence",
    "cuda-toolkit": "torch's CUDA wheels; NVIDIA's proprietary, redistributable licence",
}
# distributions whose metadata states no licence, with the one their repositories' LICENSE file gives
UNSTATED = {
    "cuda-toolkit": "NVIDIA Software License (proprietary, redistributable; LICENSE in the wheel)",
    "namex": "Apache-2.0 (LICENSE in github.com/fchollet/namex; through keras, test extra)",
    "conda-inject": "MIT (LICENSE in github.com/snakemake/conda-inject)",
    "snakemake-interface-*": "MIT (LICENSE in each github.com/snakemake/snakemake-interface-* repository)",
}
OPTIONAL_GPL = {"pylibjpeg-libjpeg": "jpeg-lossless"}  # GPL-3.0 decoders, each in its own extra


def closure(name: str = "medrepro", extras: tuple[str, ...] = (), without: tuple[str, ...] = ()) -> dict[str, str]:
    """Every installed distribution ``name`` (with ``extras``) requires, directly or not, by
    canonical name, with its installed version (``name`` itself excluded); the direct
    requirements named in ``without`` are left out with what only they bring."""
    seen: dict[str, set] = {}
    todo = [(name, set(extras))]
    skip = {canonicalize_name(w) for w in without}
    root = canonicalize_name(name)
    while todo:
        dist_name, want = todo.pop()
        dist = md.distribution(dist_name)
        key = canonicalize_name(dist.metadata["Name"])
        if key in seen and want <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | want
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (want or {""})):
                continue
            if key == root and canonicalize_name(req.name) in skip:
                continue
            todo.append((req.name, set(req.extras)))
    return {k: md.version(k) for k in sorted(seen) if k != root}


def licence(name: str) -> str:
    """A distribution's licence: its SPDX ``License-Expression``, else its licence classifiers,
    else the free-text ``License`` field (first line)."""
    meta = md.distribution(name).metadata
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return "; ".join(classifiers)
    text = (meta.get("License") or "").strip().splitlines()
    return text[0][:80] if text else noted(canonicalize_name(name), UNSTATED) or "not stated"


def noted(name: str, table: dict | None = None) -> str | None:
    for pattern, why in (NOTED if table is None else table).items():
        if re.fullmatch(pattern.replace("*", ".*"), name):
            return why
    return None


def is_copyleft_or_proprietary(text: str) -> bool:
    return bool(re.search(r"(?<!L)GPL|General Public License|Proprietary", text)) and "Lesser" not in text


def table(extras: tuple[str, ...] = ()) -> str:
    rows = [(n, v, licence(n)) for n, v in closure("medrepro", extras).items()]
    width = max(len(n) for n, _, _ in rows)
    lines = [f"{n:{width}}  {v:12}  {lic}" + (f"  [{noted(n)}]" if noted(n) else "") for n, v, lic in rows]
    return "\n".join(lines)
