"""The run report (run.json, run.html): per-core SOPs and spikes as the run measured them, totals
per stage and layer that add up, the energy breakdown, chip-to-chip traffic measured by Lava and
the lockstep simulator alike, and a raster whose replay agrees with the run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import compile_split

from sdllm.compiler.emit import emit
from sdllm.formats.build import read as load_build
from sdllm.runtime.fast import run_fast
from sdllm.runtime.lava_backend import run_lava
from sdllm.runtime.lockstep import run_lockstep
from sdllm.runtime.run_page import format_html
from sdllm.runtime.run_report import run_report, to_json, write
from sdllm.runtime.sampling import GREEDY
from sdllm.runtime.trace import trace_token

BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def multi_chip(tiny_model, tmp_path_factory):
    """The tiny model spread over several 16-core chips, with reduce cores and split KV cores."""
    out = tmp_path_factory.mktemp("multi")
    emit(compile_split(tiny_model, out, chip={"cores_per_chip": 16, "mesh": [4, 4]}, chips=16), str(out / "b"))
    return load_build(str(out / "b"))


def test_report_content_is_what_the_run_measured(multi_chip):
    build, prompt = multi_chip, list(b"xy")
    result = run_lockstep(build, prompt, 4)
    lava = run_lava(build, prompt, 4, granularity="chip")
    assert lava.chip_packets == result.chip_packets  # measured in Lava's chip processes as in one process
    assert {k: v.tolist() for k, v in lava.core_spikes.items()} == {k: v.tolist() for k, v in result.core_spikes.items()}
    trace = trace_token(build, result.tokens, len(prompt) - 1)
    r = run_report(build, result, prompt, "lockstep", GREEDY, trace, "text")
    assert r["format"] == "sdllm-run-report" and r["positions"] == len(result.logits) == 5
    cores = {c["name"]: c for c in r["cores"]}
    assert set(cores) == {c.name for c in build.cores if c.type != "host_io"}
    for c in build.cores:
        if c.type != "host_io":
            rc = cores[c.name]
            assert rc["sops_per_token"] == pytest.approx(result.core_sops[c.name].mean())
            assert rc["spikes_per_token"] == pytest.approx(result.core_spikes[c.name].mean())
            assert rc["chip"] == c.chip and rc["positions"][0] == list(c.position)
    total = result.sops_per_token().mean()
    assert r["sops_per_token"] == pytest.approx(total)
    assert sum(s["sops_per_token"] for s in r["stages"]) == pytest.approx(total)
    assert sum(lay["sops_per_token"] for lay in r["layers"]) == pytest.approx(total)
    assert sum(s["cores"] for s in r["stages"]) == sum(c.span for c in build.cores if c.type != "host_io")
    e = r["energy"]
    assert e["sop_energy_nj"] + e["neuron_energy_nj"] + e["noc_energy_nj"] == pytest.approx(1e3 * e["energy_per_token_uj"])
    assert e["noc_energy_nj"] > 0 and r["noc"]["chip_crossings_per_token"] > 0
    # packets per chip pair, weighted by the chip links each crosses, are the run's chip crossings
    pairs = np.array(r["chip_traffic"])
    assert len(pairs) and (pairs[:, 0] != pairs[:, 1]).all()
    hops = np.array([build.hw.chip_hops(int(a), int(b)) for a, b, _ in pairs])
    assert (pairs[:, 2] * hops).sum() == pytest.approx(result.traffic[:, 2].mean())
    # the raster's replay of the traced token sends what the run counted for that position
    ra = r["raster"]
    cells = np.asarray(ra["sent"])
    assert (cells[:, 2] > 0).all() and (cells[:, 1] < r["period"]).all()
    sent = dict(zip(ra["cores"], np.bincount(cells[:, 0], cells[:, 2], minlength=len(ra["cores"])).astype(int)))
    assert sent == {k: int(v[len(prompt) - 1]) for k, v in result.core_spikes.items()}
    spikes = np.asarray(ra["spikes"])
    q_max = (1 << (build.quant.widest_values() - 1)) - 1  # ±1 spikes, or a graded code's values
    assert len(spikes) and (spikes[:, 2] != 0).all() and (np.abs(spikes[:, 2]) <= q_max).all() and (spikes[:, 0] < r["period"]).all()
    assert len(spikes) <= sent[ra["unit"]]


def test_report_is_deterministic_and_the_page_has_every_section(multi_chip, tmp_path):
    build, prompt = multi_chip, list(b"ab")
    result = run_lockstep(build, prompt, 3)
    r = run_report(build, result, prompt, "lockstep", GREEDY, trace_token(build, result.tokens, 1), "ab")
    paths = write(str(tmp_path / "a"), r)
    again = write(str(tmp_path / "b"), json.loads(to_json(r)))
    for p, q in zip(paths, again):
        with open(p, "rb") as f, open(q, "rb") as g:
            assert f.read() == g.read()
    page = open(paths[1], encoding="utf-8").read()
    for heading in ("Synaptic operations per core, on each chip&#x27;s mesh", "Spikes sent per core", "Per stage and per layer",
                    "Energy per token", "Traffic between chips, measured", "One token&#x27;s phases", "Per core"):
        assert heading in page, heading
    assert page.count("<svg") == 6 and "not counted" not in page


def test_fast_backend_report_says_what_it_does_not_count(default_build):
    build = load_build(default_build)
    result = run_fast(build, list(b"if "), 2)
    r = run_report(build, result, list(b"if "), "fast", GREEDY)
    assert r["spikes_per_token"] is None and r["chip_traffic"] is None and r["noc"] is None and r["raster"] is None
    page = format_html(r)
    assert "not counted: the fast executor computes the network without stepping it" in page


def test_sdllm_run_writes_the_report(default_build, tmp_path):
    out = tmp_path / "report"
    p = subprocess.run([os.path.join(BIN, "sdllm-run"), default_build, "--prompt", "The if", "--max-new-tokens", "3",
                        "--report", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    r = json.loads((out / "run.json").read_text())
    assert r["backend"] == "lava" and r["generated_tokens"] == 3 and r["timesteps"] == 5 * r["interval"] + 3 * r["period"]
    assert r["generated_text"] in p.stdout
    assert r["chip_traffic"] == [] and r["raster"]["position"] == 0 and len(r["raster"]["sent"][0]) == 3
    assert (out / "run.html").read_text().startswith("<!DOCTYPE html>")
    assert f"run report: {out / 'run.json'}, {out / 'run.html'}" in p.stdout
    assert sorted(os.listdir(out)) == ["run.html", "run.json"]


def test_reports_render_in_notebooks(default_build):
    """MappingReport and RunReport show their pages in Jupyter (`_repr_html_`), framed."""
    import html
    import re

    import sdllm

    build = sdllm.load_build(default_build)
    run = build.run("The if", 2, backend="fast")
    for report in (build.report, run.report(raster_position=None)):
        frame = report._repr_html_()
        match = re.fullmatch(r'<iframe srcdoc="([^"]*)" style="[^"]*"></iframe>', frame)
        assert match and html.unescape(match.group(1)) == report.html
