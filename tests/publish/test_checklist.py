"""Reporting checklists: every paper answers every TRIPOD+AI and CLAIM 2024 item; this
reproduction's answers point at files a run makes, and read "no" where it did not make them."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from medrepro.config import load_config
from medrepro.publish.checklist import STATUSES, paper_table, split_status, summary, write_checklists

from ..conftest import REPO, paper_folders

CHECKLISTS = REPO / "config" / "checklists.yaml"


def _items():
    return yaml.safe_load(CHECKLISTS.read_text())


def test_the_published_checklists_item_counts():
    c = _items()
    # TRIPOD+AI: 27 items, 52 with their parts (Collins et al. 2024); CLAIM 2024: 44 items
    tripod = [i["id"] for i in c["tripod_ai"]["items"]]
    assert len(tripod) == 52 and len({i.rstrip("abcdefg") for i in tripod}) == 27
    assert [i["id"] for i in c["claim_2024"]["items"]] == [str(k) for k in range(1, 45)]
    for checklist in c.values():
        for item in checklist["items"]:
            status, _ = split_status(item["here"]["status"], item["id"])
            assert status in STATUSES and item["topic"] and item["section"]
            assert item["here"].get("file") or status in ("no", "n/a"), item   # a yes or partly names its file


@pytest.mark.parametrize("paper", paper_folders("checklist.yaml"))
def test_every_paper_answers_every_item(paper, tmp_path):
    cfg = load_config(REPO / "config")
    answers = yaml.safe_load((REPO / cfg["papers"][paper]["checklist"]).read_text())
    table = paper_table(_items(), answers, tmp_path, paper)   # an empty results folder: nothing made
    assert len(table) == 52 + 44 and set(table["paper"]) <= set(STATUSES)
    # nothing was made here, so only what report.md holds, or what needs no file, is answered
    made = table[table["reproduction"].isin(["yes", "partly"])]
    assert (made["file"] == "report.md").all(), made
    assert table.loc[table["in this reproduction"].str.startswith("not made"), "reproduction"].eq("no").all()


def test_answers_found_in_the_results_and_the_errors_that_name_the_item(tmp_path):
    c = {"tripod_ai": {"title": "TRIPOD+AI (x)", "items": [
        {"id": "1", "section": "Title", "topic": "t", "here": {"status": "yes", "file": "papers/{paper}/a.csv"}},
        {"id": "2", "section": "Abstract", "topic": "t", "here": {"status": True, "file": "report.md"}},
        {"id": "3a", "section": "Background", "topic": "t", "here": {"status": "n/a", "note": "none"}}]}}
    (tmp_path / "papers" / "p").mkdir(parents=True)
    (tmp_path / "papers" / "p" / "a.csv").write_text("x\n")
    answers = {"tripod_ai": {"1": "partly: the task", "2": False, "3a": "n/a"}}
    t = paper_table(c, answers, tmp_path, "p").set_index("item")
    assert t.loc["1", "reproduction"] == "yes" and t.loc["1", "file"] == "papers/p/a.csv"
    assert t.loc["1", "paper"] == "partly" and t.loc["1", "in the paper"] == "the task"
    assert t.loc["2", "paper"] == "no" and t.loc["2", "reproduction"] == "yes"   # unquoted YAML yes / no
    assert paper_table(c, answers, tmp_path, "q").set_index("item").loc["1", "reproduction"] == "no"
    over = {**answers, "here": {"tripod_ai": {"1": {"status": "partly", "file": "papers/{paper}/a.csv", "note": "n"}}}}
    assert paper_table(c, over, tmp_path, "p").set_index("item").loc["1", "reproduction"] == "partly"
    s = summary(paper_table(c, answers, tmp_path, "p")).iloc[0]
    assert (s["items"], s["paper: partly"], s["paper: applicable"], s["reproduction: yes"]) == (3, 1, 2, 2)
    with pytest.raises(ValueError, match=r"p.yaml: tripod_ai: items \['3a'\] not answered"):
        paper_table(c, {"tripod_ai": {"1": "yes", "2": "no"}}, tmp_path, "p", "p.yaml")
    with pytest.raises(ValueError, match=r"p.yaml: tripod_ai.2: 'maybe' does not start with one of yes, partly"):
        paper_table(c, {"tripod_ai": {"1": "yes", "2": "maybe", "3a": "no"}}, tmp_path, "p", "p.yaml")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['claim'\]"):
        paper_table(c, {**answers, "claim": {}}, tmp_path, "p", "p.yaml")
    paper_file = tmp_path / "p.yaml"
    paper_file.write_text(yaml.safe_dump(answers))
    cl = tmp_path / "c.yaml"
    cl.write_text(yaml.safe_dump(c))
    write_checklists(cl, {"p": paper_file}, tmp_path, tmp_path / "out")
    assert pd.read_csv(tmp_path / "out" / "p.csv").shape[0] == 3 and (tmp_path / "out" / "p_summary.tex").is_file()
