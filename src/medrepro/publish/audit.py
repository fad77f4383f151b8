"""Arithmetic audit of a paper's own tables, as transcribed in its YAML.

Published tables carry arithmetic that can be checked without any data: an F1 score
follows from the precision and recall beside it, an accuracy from the correct and total
counts, correct + incorrect is the total, per-class counts add up to the split sizes,
a macro average is the mean of the per-class values, a split fraction follows from the
counts, the same quantity printed in two tables is the same number, and accuracy,
sensitivity, specificity, precision and F1 of one binary test set must come from one
confusion matrix of the stated size (that last test is mlscorecheck's,
https://github.com/FalseNegativeLab/mlscorecheck, Fazekas & Kovács 2024,
doi:10.1016/j.patcog.2024.110882).

What relates to what is declared in the paper's YAML under ``audit`` (the declarations say
where the numbers are and how they relate; they carry no values):

``tables``   ``rows`` (a path pattern; each match is one row), ``columns`` (field names, for
             rows printed as lists), ``decimals`` (printed precision: YAML drops trailing
             zeros), ``kind`` (``binary``: one positive class; ``per_class``: one class against
             the rest, whose correct count is its true positives; ``macro``: averages over
             classes), ``total`` (the test-set size the row's ``total`` must equal),
             ``testset_size`` (for per-class rows: the whole test set, so each class is
             checked as a binary problem with p = the class's total), ``sizes`` ({field: N}:
             a value that must be a whole number of N items).
``same``     ``a``, ``b``: two places that print the same quantity (``b`` may use ``a``'s bindings
             and row fields); rows are compared field by field.
``sums``     ``total`` and ``parts``: the parts add up to the total.
``splits``   ``fraction``, ``count``, ``total``: a stated split fraction against the counts,
             within half a unit of its last printed digit (``decimals``, default 2: a whole
             percentage), or ``tolerance`` (a fraction of the total) for grouped splits.
``macro``    ``classes`` and ``mean``: per-class rows against their macro-average row.
``bounds``   ``value``, ``max``/``min``, ``says``: a number against a claim in the text.
``confusion`` ``scores`` ({mlscorecheck score name: path}), ``testset`` ({p, n}), optional
             ``counts`` ({tp, fn, tn, fp}: the printed confusion matrix), ``decimals``.

Path patterns are ``/``-separated keys; a segment may be ``*`` (any key), ``{name}`` (any key,
bound by name for the other paths of the entry), an integer index or a slice (``:-1``) into
a list; ``#field`` at the end picks one field of a row.  A value is consistent when it lies
within half a unit of its last printed digit of the exact value.

Every check is returned, consistent or not, with its arithmetic written out.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import pandas as pd

RATE_FIELDS = ("precision", "recall", "f1", "accuracy", "sensitivity", "specificity")
COUNT_FIELDS = ("correct", "incorrect", "total")


class AuditSpecError(ValueError):
    """The ``audit`` block of a paper's YAML does not match the transcription."""


@dataclass(frozen=True)
class Check:
    """One check: what was checked, where, the printed value(s), the arithmetic, the verdict."""
    check: str
    where: str
    printed: str
    arithmetic: str
    consistent: bool
    values: tuple[str, ...] = ()   # the printed values it rests on ("path#field"): a failing check's suspects


# --- path patterns -------------------------------------------------------------------------------

def _segment_regex(seg: str, bound: dict) -> re.Pattern:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}|\*", seg):
        out += re.escape(seg[pos:m.start()])
        if m.group(0) == "*":
            out += ".*"
        elif m.group(1) in bound:
            out += re.escape(str(bound[m.group(1)]))
        else:
            out += f"(?P<{m.group(1)}>.+?)"
        pos = m.end()
    return re.compile(out + re.escape(seg[pos:]))


def _is_slice(seg: str) -> bool:
    return ":" in seg and re.fullmatch(r"-?\d*:-?\d*", seg) is not None


def find(tree, pattern: str, bound: dict | None = None) -> list[tuple[str, object, dict]]:
    """Every match of ``pattern`` in ``tree``: (concrete path, value, bindings), in document order.

    A slice segment yields one match whose value is the list of the sliced items.  A ``#field``
    suffix is kept on the paths (the values are the rows; :class:`_Audit` picks the field).
    """
    bound = dict(bound or {})
    pattern, _, field = pattern.partition("#")
    results = [("", tree, bound)]
    for seg in pattern.strip("/").split("/"):
        nxt = []
        for path, node, b in results:
            if isinstance(node, list):
                if _is_slice(seg):
                    lo, hi = (int(x) if x else None for x in seg.split(":"))
                    nxt.append((f"{path}/{seg}", node[lo:hi], b))
                elif re.fullmatch(r"-?\d+", seg):
                    i = int(seg)
                    if -len(node) <= i < len(node):
                        nxt.append((f"{path}/{seg}", node[i], b))
                else:
                    rx = _segment_regex(seg, b)
                    for i, v in enumerate(node):
                        m = rx.fullmatch(str(i))
                        if m:
                            nxt.append((f"{path}/{i}", v, {**b, **m.groupdict()}))
            elif isinstance(node, dict):
                rx = _segment_regex(seg, b)
                for k, v in node.items():
                    m = rx.fullmatch(str(k))
                    if m:
                        nxt.append((f"{path}/{k}", v, {**b, **m.groupdict()}))
        results = nxt
    if field:
        return [(f"{p.lstrip('/')}#{field}", v, b) for p, v, b in results]
    return [(p.lstrip("/"), v, b) for p, v, b in results]


# --- numbers --------------------------------------------------------------------------------------

def _decimals_of(v) -> int:
    """Printed decimals of a value with no declared precision (``repr`` of the float)."""
    if isinstance(v, int):
        return 0
    s = repr(float(v))
    if "e" in s:
        mant, exp = s.split("e")
        return max(0, len(mant.partition(".")[2].rstrip("0")) - int(exp))
    return len(s.partition(".")[2].rstrip("0"))


def _half(decimals: int) -> float:
    return 0.5 * 10.0 ** -decimals + 1e-12


def _fmt(v, decimals: int | None = None) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int) or (isinstance(v, float) and decimals == 0):
        return f"{int(v):,}"
    d = _decimals_of(v) if decimals is None else decimals
    return f"{v:.{d}f}"


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- the audit ------------------------------------------------------------------------------------

class _Audit:
    def __init__(self, published: dict, where: str):
        self.doc = published
        self.where = where
        self.spec = published.get("audit") or {}
        self.checks: list[Check] = []
        self.rows: dict[str, tuple[dict, dict, dict]] = {}   # path -> (row, table entry, bindings)
        for i, t in enumerate(self.spec.get("tables", [])):
            matches = find(self.doc, t["rows"])
            if not matches:
                raise AuditSpecError(f"{where}: audit.tables[{i}] rows {t['rows']!r} matches nothing")
            for path, value, b in matches:
                self.rows.setdefault(path, (self._as_row(value, t, path), t, b))

    # rows and values
    def find(self, pattern: str, bound: dict | None = None) -> list[tuple[str, object, dict]]:
        """:func:`find`, with rows as mappings of their declared columns and ``#field`` picked."""
        out = []
        for path, v, b in find(self.doc, self._subst(pattern, bound or {}), bound):
            base, _, field = path.partition("#")
            if base in self.rows:
                v = self.rows[base][0]
            if field:
                if not isinstance(v, dict) or field not in v:
                    continue
                v = v[field]
            out.append((path, v, b))
        return out

    def _as_row(self, value, t: dict, path: str) -> dict:
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        cols = t.get("columns")
        if not isinstance(value, list) or not cols:
            raise AuditSpecError(f"{self.where}: {path} is a {type(value).__name__}; audit.tables rows "
                                 f"{t['rows']!r} needs rows that are mappings, or lists with `columns`")
        if len(cols) != len(value):
            raise AuditSpecError(f"{self.where}: {path} has {len(value)} values; its audit.tables entry "
                                 f"names {len(cols)} columns {cols}")
        return dict(zip(cols, value))

    def decimals(self, path: str, field: str | None, value) -> int:
        base = path.partition("#")[0]
        if base in self.rows and _num(value) and not isinstance(value, int):
            return self.rows[base][1].get("decimals", _decimals_of(value))
        return _decimals_of(value) if _num(value) else 0

    def value(self, pattern: str, bound: dict, entry: str) -> tuple[str, object]:
        matches = self.find(pattern, bound)
        if len(matches) != 1:
            raise AuditSpecError(f"{self.where}: {entry}: {pattern!r} (with {bound}) matches "
                                 f"{len(matches)} places, expected one")
        return matches[0][:2]

    def total(self, pattern, bound: dict, entry: str) -> tuple[str, float]:
        """A number, or the sum of a pattern's matches (lists summed too)."""
        if _num(pattern):
            return str(pattern), pattern
        matches = [m for p in ([pattern] if isinstance(pattern, str) else pattern) for m in self.find(p, bound)]
        if not matches:
            raise AuditSpecError(f"{self.where}: {entry}: {pattern!r} (with {bound}) matches nothing")
        vals = []
        for _, v, _ in matches:
            vals += v if isinstance(v, list) else [v]
        if not all(_num(v) for v in vals):
            raise AuditSpecError(f"{self.where}: {entry}: {pattern!r} holds non-numbers {vals}")
        pats = [self._subst(p, bound) for p in ([pattern] if isinstance(pattern, str) else pattern)]
        label = matches[0][0] if len(matches) == 1 else f"{' + '.join(pats)} ({len(vals)} values)"
        return label, sum(vals)

    @staticmethod
    def _subst(pattern: str, bound: dict) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: str(bound.get(m.group(1), m.group(0))), pattern)

    def add(self, check: str, where: str, printed: str, arithmetic: str, ok: bool, values=()):
        self.checks.append(Check(check, where, printed, arithmetic, bool(ok), tuple(map(self._value_id, values))))

    def _elements(self, path: str, value) -> list[str]:
        """The paths of a list's values where ``path`` matched a whole list or a slice of one."""
        if not isinstance(value, list):
            return [path]
        base, _, last = path.rpartition("/")
        if _is_slice(last):
            whole = find(self.doc, base)
            n = len(whole[0][1]) if len(whole) == 1 and isinstance(whole[0][1], list) else len(value)
            idx = list(range(n))[slice(*(int(x) if x else None for x in last.split(":")))]
            return [f"{base}/{i}" for i in idx]
        return [f"{path}/{i}" for i in range(len(value))]

    def _value_id(self, path: str) -> str:
        """One name per printed value: a row's field as ``row#field`` however a pattern reached it."""
        if "#" not in path:
            base, _, last = path.rpartition("/")
            if base in self.rows and last in self.rows[base][0]:
                return f"{base}#{last}"
        return path

    # per-row checks
    def row_checks(self):
        for path, (row, t, b) in self.rows.items():
            kind = t.get("kind", "macro")
            d = t.get("decimals")
            h = _half(d) if d is not None else None
            c, i, n = row.get("correct"), row.get("incorrect"), row.get("total")
            if _num(c) and _num(i) and _num(n):
                self.add("correct + incorrect = total", path, f"{_fmt(c)} + {_fmt(i)}; total {_fmt(n)}",
                         f"{_fmt(c)} + {_fmt(i)} = {_fmt(c + i)}", c + i == n,
                         [f"{path}#correct", f"{path}#incorrect", f"{path}#total"])
            if _num(c) and _num(n) and n > 0:
                field = "recall" if kind == "per_class" else "accuracy"
                v = row.get(field)
                if _num(v):
                    dd = d if d is not None else _decimals_of(v)
                    self.add(f"{field} = correct / total", path, f"{field} {_fmt(v, dd)}",
                             f"{_fmt(c)} / {_fmt(n)} = {c / n:.{dd + 2}f}", abs(c / n - v) <= _half(dd),
                             [f"{path}#{field}", f"{path}#correct", f"{path}#total"])
            if kind in ("binary", "per_class") and all(_num(row.get(k)) for k in ("precision", "recall", "f1")):
                p, r, f = row["precision"], row["recall"], row["f1"]
                dd = d if d is not None else max(map(_decimals_of, (p, r, f)))
                hh = h if h is not None else _half(dd)
                lo, hi = _f1(max(p - hh, 0), max(r - hh, 0)), _f1(min(p + hh, 1), min(r + hh, 1))
                self.add("F1 = 2PR / (P + R)", path, f"P {_fmt(p, dd)}, R {_fmt(r, dd)}, F1 {_fmt(f, dd)}",
                         f"2 × {_fmt(p, dd)} × {_fmt(r, dd)} / ({_fmt(p, dd)} + {_fmt(r, dd)}) = "
                         f"{_f1(p, r):.{dd + 1}f}",
                         lo - hh <= f <= hi + hh, [f"{path}#f1", f"{path}#precision", f"{path}#recall"])
            if t.get("total") is not None and _num(n):
                label, want = self.total(t["total"], b, f"audit.tables {t['rows']!r} total")
                self.add("total = test-set size", path, f"total {_fmt(n)}", f"{label} = {_fmt(want)}", n == want,
                         [f"{path}#total", label])
            for field, size in (t.get("sizes") or {}).items():
                v = row.get(field)
                if _num(v):
                    label, size = self.total(size, b, f"audit.tables {t['rows']!r} sizes")
                    dd = d if d is not None else _decimals_of(v)
                    k = round(v * size)
                    near = [x for x in (k - 1, k, k + 1) if 0 <= x <= size]
                    ok = any(abs(x / size - v) <= _half(dd) for x in near)
                    self.add(f"{field} is a whole number of {_fmt(int(size))}", path, f"{field} {_fmt(v, dd)}",
                             "; ".join(f"{x}/{_fmt(int(size))} = {x / size:.{dd + 1}f}" for x in near), ok,
                             [f"{path}#{field}"])
            if kind == "per_class" and t.get("testset_size") is not None and _num(n):
                _, size = self.total(t["testset_size"], b, f"audit.tables {t['rows']!r} testset_size")
                fields = [(k, f) for k, f in (("ppv", "precision"), ("sens", "recall"), ("f1p", "f1"))
                          if _num(row.get(f))]
                scores = {k: row[f] for k, f in fields}
                if scores:
                    self._mlscorecheck(path, scores, int(n), int(size - n), d if d is not None else
                                       max(map(_decimals_of, scores.values())), f"one class against the rest: "
                                       f"p = {_fmt(n)}, n = {_fmt(int(size - n))}",
                                       [f"{path}#{f}" for _, f in fields] + [f"{path}#total"])

    def _mlscorecheck(self, where: str, scores: dict, p: int, n: int, decimals: int, context: str, values=()):
        from mlscorecheck.check.binary import check_1_testset_no_kfold

        logging.getLogger("mlscorecheck").setLevel(logging.WARNING)
        res = check_1_testset_no_kfold(testset={"p": p, "n": n}, scores=scores, eps=_half(decimals))
        pairs = res["n_valid_tptn_pairs"]
        self.add("one confusion matrix (mlscorecheck)", where,
                 ", ".join(f"{k} {_fmt(v, decimals)}" for k, v in scores.items()),
                 f"{context}: {pairs} (tp, tn) pair{'s' * (pairs != 1)} reproduce{'s' * (pairs == 1)} "
                 f"every score to {decimals} decimals", not res["inconsistency"], values)

    def entries(self, section: str, key: str, numbers: bool = False):
        """(entry name, entry, matches of its ``key`` pattern) for each entry of ``audit.<section>``;
        a pattern that matches nothing (no number, with ``numbers``) is an error naming the entry."""
        for k, e in enumerate(self.spec.get(section, [])):
            name = f"audit.{section}[{k}]"
            matches = [m for m in self.find(e[key]) if not numbers or _num(m[1])]
            if not matches:
                raise AuditSpecError(f"{self.where}: {name} {key} {e[key]!r} matches "
                                     f"{'no number' if numbers else 'nothing'}")
            yield name, e, matches

    def same(self):
        for name, e, a_matches in self.entries("same", "a"):
            for pa, _, b in a_matches:
                _, va = self.value(pa, {}, name)
                fields = va if isinstance(va, dict) else {}
                pb, vb = self.value(e["b"], {**{f: _fmt(v) if isinstance(v, float) else v
                                                for f, v in fields.items()}, **b}, name)
                if isinstance(va, dict) and isinstance(vb, dict):
                    common = [f for f in va if f in vb and _num(va[f]) and _num(vb[f])]
                    if not common:
                        raise AuditSpecError(f"{self.where}: {name}: {pa} and {pb} share no field")
                    pairs = [(f, va[f], vb[f]) for f in common]
                elif _num(va) and _num(vb):
                    pairs = [(None, va, vb)]
                else:
                    raise AuditSpecError(f"{self.where}: {name}: {pa} ({va!r}) and {pb} ({vb!r}) are not both "
                                         "numbers or both rows")
                for f, x, y in pairs:
                    dx, dy = self.decimals(pa, f, x), self.decimals(pb, f, y)
                    ok = x == y if isinstance(x, int) and isinstance(y, int) else \
                        abs(x - y) <= _half(dx) + _half(dy)
                    label = f" ({f})" if f else ""
                    self.add("same quantity in two places", f"{pa} vs {pb}{label}",
                             f"{_fmt(x, dx)} vs {_fmt(y, dy)}",
                             e.get("note", "the same quantity, printed twice")
                             + ("" if ok else f": they differ by {_fmt(abs(x - y), max(dx, dy))}"), ok,
                             [f"{pa}#{f}" if f else pa, f"{pb}#{f}" if f else pb])

    def sums(self):
        for name, e, matches in self.entries("sums", "total"):
            for path, total, b in matches:
                pats = [e["parts"]] if isinstance(e["parts"], str) else e["parts"]
                parts = [m for p in pats for m in self.find(p, b)]
                vals = []
                for _, v, _ in parts:
                    vals += v if isinstance(v, list) else [v]
                if not vals or not all(_num(v) for v in vals + [total]):
                    raise AuditSpecError(f"{self.where}: {name}: parts {e['parts']!r} of {path} are {vals}")
                s = sum(vals)
                self.add("parts add up to the total", path, f"total {_fmt(total)}",
                         " + ".join(_fmt(v) for v in vals) + f" = {_fmt(s)}", s == total,
                         [path] + [e for p, v, _ in parts for e in self._elements(p, v)])

    def splits(self):
        for name, e, matches in self.entries("splits", "fraction", numbers=True):
            for path, frac, b in matches:
                lc, count = self.total(e["count"], b, name)
                lt, total = self.total(e["total"], b, name)
                expect = frac * total
                # the one rule of the audit: within half a unit of the last printed digit (a fraction
                # printed as a whole percentage: 0.5 %), or the stated tolerance of a grouped split
                half = 0.5 * 10 ** -e.get("decimals", 2)
                tol = max(half, e.get("tolerance", 0.0))
                self.add("split fraction against the counts", f"{path} ({lc} of {lt})",
                         f"{frac:.0%} stated; {_fmt(count)} of {_fmt(total)}",
                         f"{frac:g} × {_fmt(total)} = {expect:,.1f}; {_fmt(count)} / {_fmt(total)} = "
                         f"{count / total:.1%}" + (f" (tolerance {e['tolerance']:.0%} of the total)"
                                                   if e.get("tolerance") else f" (within {half:.1%})"),
                         abs(count / total - frac) <= tol + 1e-12, [path, lc, lt])

    def macro(self):
        for name, e, means in self.entries("macro", "mean"):
            for mpath, _, b in means:
                _, mean = self.value(mpath, {}, name)
                classes = [(p, v) for p, v, _ in self.find(e["classes"], b)]
                if not classes:
                    raise AuditSpecError(f"{self.where}: {name}: classes {e['classes']!r} match nothing")
                for f in list(RATE_FIELDS) + list(COUNT_FIELDS):
                    if f == "accuracy" or not _num(mean.get(f)) or not all(_num(r.get(f)) for _, r in classes):
                        continue
                    vals = [r[f] for _, r in classes]
                    if f in COUNT_FIELDS:
                        s = sum(vals)
                        self.add(f"per-class {f} add up", f"{mpath}#{f}", _fmt(mean[f]),
                                 " + ".join(_fmt(v) for v in vals) + f" = {_fmt(s)}", s == mean[f],
                                 [f"{mpath}#{f}"] + [f"{p}#{f}" for p, _ in classes])
                        continue
                    dm = self.decimals(mpath, f, mean[f])
                    dc = max(self.decimals(p, f, r[f]) for p, r in classes)
                    avg = sum(vals) / len(vals)
                    self.add(f"macro {f} = mean of the classes", f"{mpath}#{f}", _fmt(mean[f], dm),
                             f"({' + '.join(_fmt(v, dc) for v in vals)}) / {len(vals)} = {avg:.{dm + 1}f}",
                             abs(avg - mean[f]) <= _half(dm) + _half(dc),
                             [f"{mpath}#{f}"] + [f"{p}#{f}" for p, _ in classes])

    def bounds(self):
        for k, e in enumerate(self.spec.get("bounds", [])):
            name = f"audit.bounds[{k}]"
            path, v = self.value(e["value"], {}, name)
            says = self.value(e["says"], {}, name)[1] if e.get("says") else ""
            ok = (e.get("max") is None or v < e["max"]) and (e.get("min") is None or v > e["min"])
            rule = " and ".join(x for x in (f"< {e['max']}" if e.get("max") is not None else "",
                                            f"> {e['min']}" if e.get("min") is not None else "") if x)
            self.add("a number against the text's claim", path, _fmt(v), f"the text says {says!r} ({rule})", ok,
                     [path])

    def confusion(self):
        for k, e in enumerate(self.spec.get("confusion", [])):
            name = f"audit.confusion[{k}]"
            first = next(iter(e["scores"].values()))
            matches = self.find(first)
            if not matches:
                raise AuditSpecError(f"{self.where}: {name} scores {first!r} matches nothing")
            p, n = e["testset"]["p"], e["testset"]["n"]
            for _, _, b in matches:
                got = {s: self.value(pat, b, name) for s, pat in e["scores"].items()}
                where = ", ".join(sorted({path.rpartition("/")[0] for path, _ in got.values()}))
                scores = {s: v for s, (_, v) in got.items()}
                d = e.get("decimals", max(_decimals_of(v) for v in scores.values()))
                self._mlscorecheck(where, scores, p, n, d, f"p = {_fmt(p)}, n = {_fmt(n)}",
                                   [path for path, _ in got.values()])
                if e.get("counts"):
                    cm_at = {c: self.value(pat, b, name) for c, pat in e["counts"].items()}
                    cm = {c: v for c, (_, v) in cm_at.items()}
                    tp, fn, tn, fp = (cm[c] for c in ("tp", "fn", "tn", "fp"))
                    self.add("confusion matrix against the class sizes", where,
                             f"tp {tp}, fn {fn}, tn {tn}, fp {fp}",
                             f"tp + fn = {tp + fn} (p = {p}); tn + fp = {tn + fp} (n = {n})",
                             tp + fn == p and tn + fp == n, [path for path, _ in cm_at.values()])
                    exact = {"acc": (tp + tn) / (tp + tn + fp + fn), "sens": tp / (tp + fn),
                             "spec": tn / (tn + fp), "ppv": tp / (tp + fp), "npv": tn / (tn + fn),
                             "f1p": 2 * tp / (2 * tp + fp + fn)}
                    for s, v in scores.items():
                        if s in exact:
                            self.add(f"{s} from the confusion matrix", where, f"{s} {_fmt(v, d)}",
                                     f"{s} of tp {tp}, fn {fn}, tn {tn}, fp {fp} = {exact[s]:.{d + 2}f}",
                                     abs(exact[s] - v) <= _half(d),
                                     [got[s][0]] + [path for path, _ in cm_at.values()])


def audit(published: dict, where: str = "paper") -> list[Check]:
    """Every check that the ``audit`` block of a paper's YAML declares, with its verdict."""
    a = _Audit(published, where)
    a.row_checks()
    a.same()
    a.sums()
    a.splits()
    a.macro()
    a.bounds()
    a.confusion()
    return a.checks


def likely_causes(checks: list[Check]) -> tuple[list[str], pd.DataFrame]:
    """The most likely single cause of each failing check: the printed value whose change would
    make the most failing checks hold, found greedily.  A value in more failing checks explains
    more of them; among equals, the one in fewer passing checks (changing it breaks less), then
    the one a check names first (the value it checks).  Returns each check's cause ('' for the
    consistent ones) and one row per cause: the value, the failing checks it explains, the
    passing checks it is in."""
    from collections import Counter

    passing = Counter(v for c in checks if c.consistent for v in set(c.values))
    left = {i for i, c in enumerate(checks) if not c.consistent}
    cause = [""] * len(checks)
    rows = []
    while left:
        count = Counter(v for i in left for v in set(checks[i].values))
        if not count:   # checks that record no value: each its own cause
            for i in sorted(left):
                cause[i] = checks[i].where
                rows.append({"likely cause": checks[i].where, "explains": 1, "passing checks it is in": 0,
                             "checks": checks[i].check})
            break
        first = min(left)
        order = {v: k for k, v in enumerate(checks[first].values)}
        best = max(count, key=lambda v: (count[v], -passing[v], -order.get(v, len(order)), v))
        took = sorted(i for i in left if best in checks[i].values)
        for i in took:
            cause[i] = best
        left -= set(took)
        kinds = Counter(checks[i].check for i in took)
        rows.append({"likely cause": best, "explains": len(took), "passing checks it is in": passing[best],
                     "checks": "; ".join(f"{k} ({n})" if n > 1 else k for k, n in kinds.items())})
    return cause, pd.DataFrame(rows, columns=["likely cause", "explains", "passing checks it is in", "checks"])


def checks_table(checks: list[Check]) -> pd.DataFrame:
    """All checks as a table (``consistent``: yes/no)."""
    cause, _ = likely_causes(checks)
    return pd.DataFrame([{"check": c.check, "where": c.where, "printed": c.printed, "arithmetic": c.arithmetic,
                          "consistent": "yes" if c.consistent else "no", "likely cause": k}
                         for c, k in zip(checks, cause)],
                        columns=["check", "where", "printed", "arithmetic", "consistent", "likely cause"])


def write_audit(published_yaml, out_dir, paper: str) -> dict:
    """Audit one paper's YAML into ``out_dir``: ``checks.csv`` (every check), ``findings`` (the
    inconsistent ones, as CSV, Markdown and LaTeX), ``summary.json`` and ``provenance.json``.

    Returns the summary: checks run, inconsistencies found, and the counts by kind of check.
    """
    from pathlib import Path

    import yaml

    from ..io import atomic_dir, write_csv, write_json
    from ..provenance import record, short
    from ..tables import write_table

    published = yaml.safe_load(Path(published_yaml).read_text())
    checks = audit(published, where=str(published_yaml))
    table = checks_table(checks)
    bad = table[table["consistent"] == "no"].drop(columns="consistent")
    _, causes = likely_causes(checks)
    summary = {"paper": paper, "checks": len(table), "inconsistent": len(bad), "causes": len(causes),
               "by_check": {k: {"checks": int(len(g)), "inconsistent": int((g["consistent"] == "no").sum())}
                            for k, g in table.groupby("check", sort=False)}}
    prov = record({"published": published})
    with atomic_dir(out_dir) as tmp:
        write_csv(tmp / "checks.csv", table)
        write_table(bad, tmp / "findings", caption=f"{paper}: arithmetic that does not hold in the published "
                    f"tables ({len(bad)} of {len(table)} checks), each with its most likely cause",
                    provenance=short(prov))
        write_table(causes, tmp / "causes", caption=f"{paper}: the {len(bad)} findings by their most likely single "
                    f"cause ({len(causes)}): the printed value whose change would make the most of them hold",
                    provenance=short(prov))
        write_json(tmp / "summary.json", summary)
        write_json(tmp / "provenance.json", prov)
    return summary


__all__ = ["AuditSpecError", "Check", "audit", "checks_table", "find", "likely_causes", "write_audit"]
