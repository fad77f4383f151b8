"""Tables written three ways: CSV (data), Markdown (reading), LaTeX (papers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .io import write_csv, write_text

TABLE_FORMATS = ("csv", "md", "tex")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (pandas escapes the cells, not the caption)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def full_number(v) -> str:
    """A number written in full, as transcribed: 1e-05 -> '0.00001', 0.8622 -> '0.8622', 426.0 -> '426'."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if isinstance(v, str):
        return v
    return np.format_float_positional(float(v), trim="-")


def _shown(col: pd.Series, float_digits: int, exact: bool) -> pd.Series:
    """How a column is printed: as transcribed (``exact``), whole numbers without decimals (a float
    column whose values are all whole and not all within 0..1: counts, not rates; in a mixed
    column, each whole value above 1), other floats to ``float_digits``."""
    if exact:
        return col.map(full_number)
    if pd.api.types.is_float_dtype(col):
        vals = col.dropna()
        if len(vals) and (vals == vals.round()).all() and vals.abs().max() > 1:
            return col.map(lambda v: "" if pd.isna(v) else f"{int(v)}")
        # a column mixing rates and counts (a comparison's reproduced values): a whole number above
        # 1 is a count, never a rate
        return col.map(lambda v: "" if pd.isna(v) else f"{int(v)}" if v == round(v) and abs(v) > 1
                       else f"{v:.{float_digits}f}")
    return col.map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else v)


def write_table(df: pd.DataFrame, stem: str | Path, caption: str = "", float_digits: int = 3,
                note: str = "", provenance: str = "", exact: tuple = ("published",)) -> list[Path]:
    """Write ``df`` to ``stem.csv``, ``stem.md`` and ``stem.tex``; return the paths.

    ``note`` (e.g. "synthetic demo data, 10 epochs") is printed under the
    Markdown table and in the LaTeX caption, so no table leaves without it;
    Columns named in ``exact`` (the published values) print as transcribed, with the paper's
    own precision; whole-number float columns (counts) print without decimals.
    ``provenance`` (commit, config digest, versions: :func:`medrepro.provenance.short`) goes
    under the Markdown table and in a comment line of the LaTeX file (the CSV's is the
    ``provenance.json`` beside it).
    """
    stem = Path(stem)
    paths = [stem.with_suffix(f".{ext}") for ext in TABLE_FORMATS]
    write_csv(paths[0], df)
    shown = df.copy()
    for c in shown.columns:
        shown[c] = _shown(shown[c], float_digits, c in exact)
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
