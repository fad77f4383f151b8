"""Tables written three ways: CSV (data), Markdown (reading), LaTeX (papers)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .io import write_csv, write_text

TABLE_FORMATS = ("csv", "md", "tex")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (pandas escapes the cells, not the caption)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def write_table(df: pd.DataFrame, stem: str | Path, caption: str = "", float_digits: int = 3,
                note: str = "", provenance: str = "") -> list[Path]:
    """Write ``df`` to ``stem.csv``, ``stem.md`` and ``stem.tex``; return the paths.

    ``note`` (e.g. "synthetic demo data, 10 epochs") is printed under the
    Markdown table and in the LaTeX caption, so no table leaves without it;
    ``provenance`` (commit, config digest, versions: :func:`medrepro.provenance.short`) goes
    under the Markdown table and in a comment line of the LaTeX file (the CSV's is the
    ``provenance.json`` beside it).
    """
    stem = Path(stem)
    paths = [stem.with_suffix(f".{ext}") for ext in TABLE_FORMATS]
    write_csv(paths[0], df)
    fmt = f"{{:.{float_digits}f}}"
    shown = df.copy()
    for c in shown.columns:
        if pd.api.types.is_float_dtype(shown[c]):
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else fmt.format(v))
        else:
            shown[c] = shown[c].map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else v)
    align = ["right" if pd.api.types.is_numeric_dtype(df[c]) else "left" for c in df.columns]
    md = (f"**{caption}**\n\n" if caption else "") + shown.to_markdown(
        index=False, disable_numparse=True, colalign=align) + "\n"
    if note:
        md += f"\n_{note}_\n"
    if provenance:
        md += f"\n<sub>{provenance}</sub>\n"
    write_text(paths[1], md)
    full_caption = latex_escape(caption + (f" ({note})" if note else ""))
    tex = shown.to_latex(index=False, caption=full_caption or None, label=f"tab:{stem.name}", escape=True)
    write_text(paths[2], (f"% {provenance}\n" if provenance else "") + tex)
    return paths
