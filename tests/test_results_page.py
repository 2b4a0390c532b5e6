"""docs/RESULTS.md as the benchmarks write it (`benchmarks/results_page.py`): a benchmark replaces
its own section and every other byte of the page stays as it was."""

import datetime
import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("results_page", ROOT / "benchmarks" / "results_page.py")
results_page = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results_page)

HEAD = "# Results\n\nintro\n\n"
ALPHA = "## alpha\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
BETA = "## beta\n\nold figures\n\n```text\n## not a heading inside a block\n```\n\n"
GAMMA = "## gamma\n\nlast, no blank line at the end\n"
DAY = datetime.date(2030, 1, 2)


def test_replacing_a_section_keeps_the_others_byte_identical(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(HEAD + ALPHA + BETA + GAMMA)
    section = results_page.write_section("beta", "| new | figures |\n|---|---|\n| 3 | 4 |", page, DAY)
    assert page.read_text() == HEAD + ALPHA + section + GAMMA
    assert section.startswith("## beta\n\n_Written by `benchmarks/beta.py` on 2030-01-02; ")
    assert f"{os.cpu_count()} CPUs" in section and "| 3 | 4 |" in section and "old figures" not in section
    again = results_page.write_section("beta", "| new | figures |\n|---|---|\n| 3 | 4 |", page, DAY)
    assert again == section and page.read_text() == HEAD + ALPHA + section + GAMMA
    assert sorted(os.listdir(tmp_path)) == ["RESULTS.md"]  # written atomically: no temporary left


def test_a_new_section_is_appended_and_a_new_page_started(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(HEAD + ALPHA + GAMMA)
    section = results_page.write_section("delta", "figures", page, DAY)
    assert page.read_text() == HEAD + ALPHA + GAMMA + section
    fresh = tmp_path / "fresh.md"
    results_page.write_section("alpha", "figures", fresh, DAY)
    assert fresh.read_text().startswith(results_page.TITLE + "## alpha\n")


def test_recorded_writes_what_the_benchmark_printed_and_nothing_on_failure(tmp_path, monkeypatch, capsys):
    page = tmp_path / "RESULTS.md"
    page.write_text(HEAD + ALPHA)
    monkeypatch.setattr(results_page, "RESULTS", page)
    monkeypatch.setattr(results_page.write_section, "__defaults__", (page, None))
    with pytest.raises(RuntimeError):
        with results_page.recorded("alpha"):
            print("half a run")
            raise RuntimeError("benchmark failed")
    assert page.read_text() == HEAD + ALPHA
    with results_page.recorded("alpha"):
        print("1. throughput: 489 tokens/s")
    assert capsys.readouterr().out.count("1. throughput: 489 tokens/s") == 1
    assert page.read_text().startswith(HEAD + "## alpha\n\n_Written by")
    assert page.read_text().endswith("```text\n1. throughput: 489 tokens/s\n```\n\n")
