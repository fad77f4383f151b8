"""Tables written three ways: CSV (data), Markdown (reading), LaTeX (papers)."""
from __future__ import annotations

import re
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


# the page a LaTeX table must fit: LaTeX's article class at 10 pt (\textwidth, \textheight, in pt)
TEXT_WIDTH_PT, TEXT_HEIGHT_PT = 345.0, 550.0
CHAR_PT = 5.15        # a character's mean width at 10 pt (measured on digits, letters, capitals)
LONG_ROWS = 30        # tables of more lines (wrapped cells counted) break across pages (longtable)
WRAP_CHARS = (32, 24, 16, 12)  # text columns wider than this wrap (p{} columns), narrower if need be
# LaTeX's smaller sizes, each character's width relative to 10 pt (measured: small sizes are cut wider)
FONTS = (("", 1.0), ("\\small", 0.93), ("\\footnotesize", 0.85), ("\\scriptsize", 0.8), ("\\tiny", 0.68))
LATEX_PACKAGES = ("booktabs", "longtable", "graphicx", "pdflscape")
_BREAK = re.compile(r"(?<=[A-Za-z0-9}])\.(?=[A-Za-z0-9\\])")  # a dot between the parts of a dotted path


def latex_table(shown: pd.DataFrame, caption: str, label: str) -> str:
    """``shown`` (cells already formatted) as LaTeX that fits LaTeX's article page: a table of at
    most :data:`LONG_ROWS` rows in a float, scaled down to the text width when wider; a longer one
    as a longtable that breaks across pages, in the largest font that fits the text width, or the
    page turned (pdflscape) when none does.  Text columns (words, or dotted paths, which may break
    at their dots) wider than :data:`WRAP_CHARS` characters wrap, no narrower than their longest
    word.  Needs ``\\usepackage{booktabs,longtable,graphicx,pdflscape}`` (a comment at
    the file's top says so)."""
    cells = {h: [str(h)] + [str(v) for v in shown[h]] for h in shown.columns}
    chars = {h: max(len(c) for c in v) for h, v in cells.items()}
    word = {h: max(int(len(w) * 1.15) + 1 for c in v for w in re.split(r"\s+|(?<=[A-Za-z0-9}])\.(?=[A-Za-z0-9])", c))
            for h, v in cells.items()}  # the longest unbreakable run (underscores are wide): its p{} width
    def breakable(c: str) -> bool:  # words, or a dotted path (not a number)
        return " " in c or ("." in c and not c.replace(".", "").replace("-", "").isdigit())

    # a text column: its long cells (those that would wrap) mostly break
    text = {h: not pd.api.types.is_numeric_dtype(shown[h]) and sum(map(breakable, long)) > len(long) / 2
            for h, long in ((h, [c for c in v if len(c) > WRAP_CHARS[-1]]) for h, v in cells.items())}

    def layout(wrap_at: int) -> tuple[dict, float]:
        width = {h: max(wrap_at, word[h] + 1) if text[h] and chars[h] > wrap_at else chars[h] for h in shown.columns}
        return width, sum(width.values()) * CHAR_PT

    def fmt(width: dict, factor: float) -> str:
        return "".join(f"p{{{width[h] * CHAR_PT * factor:.0f}pt}}" if width[h] < chars[h] else "l"
                       for h in shown.columns)

    width, text_pt = layout(WRAP_CHARS[0])
    lines = sum(max([1] + [-(-len(c) // width[h]) for h, c in zip(shown.columns, row) if width[h] < chars[h]])
                for row in shown.astype(str).itertuples(index=False))
    if lines <= LONG_ROWS:
        tex = shown.to_latex(index=False, caption=caption or None, label=label, escape=True,
                             column_format=fmt(width, 1.0))
        if text_pt + 12.0 * len(chars) > 0.95 * TEXT_WIDTH_PT:
            tex = tex.replace("\\begin{tabular}", "\\resizebox{\\linewidth}{!}{%\n\\begin{tabular}", 1)
            tex = tex.replace("\\end{tabular}\n", "\\end{tabular}}\n", 1)
        return _BREAK.sub(".\\\\allowbreak{}", tex) if any(width[h] < chars[h] for h in chars) else tex
    choice = None  # portrait, then landscape; columns 3 pt apart (\tabcolsep), 1.5 pt as a last resort
    for landscape, page, sep in ((False, TEXT_WIDTH_PT, 3.0), (True, TEXT_HEIGHT_PT, 3.0), (True, TEXT_HEIGHT_PT, 1.5)):
        for wrap_at in WRAP_CHARS:
            width, text_pt = layout(wrap_at)
            fit = next(((f, k) for f, k in FONTS if text_pt * k + 2 * sep * len(chars) <= 0.95 * page), None)
            if fit:
                choice = (landscape, sep, width, *fit)
                break
        if choice:
            break
    landscape, sep, width, font, factor = choice or (True, 1.5, layout(WRAP_CHARS[-1])[0], *FONTS[-1])
    tex = shown.to_latex(index=False, caption=caption or None, label=label, escape=True, longtable=True,
                         column_format=fmt(width, factor))
    tex = _BREAK.sub(".\\\\allowbreak{}", tex)
    tex = "{" + (font + "\n" if font else "") + f"\\setlength{{\\tabcolsep}}{{{sep}pt}}\n" + tex + "}\n"
    return f"\\begin{{landscape}}\n{tex}\\end{{landscape}}\n" if landscape else tex


def write_table(df: pd.DataFrame, stem: str | Path, caption: str = "", *, float_digits: int = 3,
                note: str = "", provenance: str = "", exact: tuple = ("published",),
                tex_drop: tuple = ()) -> list[Path]:
    """Write ``df`` to ``stem.csv``, ``stem.md`` and ``stem.tex``; return the paths.

    ``note`` (e.g. "synthetic demo data, 10 epochs") is printed under the
    Markdown table and in the LaTeX caption, so no table leaves without it;
    Columns named in ``exact`` (the published values) print as transcribed, with the paper's
    own precision; whole-number float columns (counts) print without decimals.
    ``provenance`` (commit, config digest, versions: :func:`medrepro.provenance.short`) goes
    under the Markdown table and in a comment line of the LaTeX file (the CSV's is the
    ``provenance.json`` beside it).  ``tex_drop``: columns left out of the LaTeX table (a long
    text column a page cannot hold beside the others; its caption names them and the CSV).
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
    dropped = [c for c in tex_drop if c in shown.columns]
    left_out = f"; column{'s' * (len(dropped) > 1)} {', '.join(dropped)} in {stem.name}.csv" if dropped else ""
    full_caption = latex_escape(caption + (f" ({note}{left_out})" if note else (f" ({left_out[2:]})" if dropped
                                                                                  else "")))
    tex = latex_table(shown.drop(columns=dropped), full_caption, f"tab:{stem.name}")
    head = (f"% {provenance}\n" if provenance else "") + f"% needs \\usepackage{{{','.join(LATEX_PACKAGES)}}}\n"
    write_text(paths[2], head + tex)
    return paths


def scale_note(scale: str) -> str:
    """The line every table and figure carries about the config's ``scale``."""
    return ("demo scale: synthetic stand-in data, reduced sizes and epochs; not the paper's data"
            if scale == "demo" else "full scale: the paper's settings")
