"""The HTML core-mapping report: self-contained, escaped, deterministic, and quick on big reports."""

import re
import time
from html.parser import HTMLParser

import numpy as np

from sdllm.compiler.html_report import format_html

TYPES = ["synapse", "reduce", "kv_qk", "kv_pv", "neuron_unit"]


def _core(i, chip, positions, layer=0, kind="synapse", util=0.5):
    return {"id": i, "name": f"L{layer}.{kind}[{i}]", "type": kind, "layer": layer, "chip": chip,
            "position": positions[0], "positions": positions, "span": len(positions), "neurons": 64 * len(positions),
            "axons_in": 32, "routes_out": 64, "table_entries": 4, "table_compressed": False, "synapse_entries": 100,
            "synapse_bits": 1000, "synapse_util": util, "neuron_util": 0.25}


def small_report(traffic=True):
    """2 chips on a 2 x 1 x 1 topology, 4 x 2 cores each; core 5 is a neuron unit spanning two cores."""
    cores = [_core(1, 0, [[0, 0]], util=0.9), _core(2, 0, [[1, 0]], util=0.1), _core(3, 0, [[2, 0]], kind="reduce"),
             _core(4, 1, [[0, 0]], layer=1, kind="kv_qk"), _core(5, 1, [[1, 0], [2, 0]], layer=1, kind="neuron_unit"),
             _core(6, 1, [[3, 1]], layer=2, util=1.0)]
    return {
        "target": "tiny<chip>", "system": "test & check", "cores_per_chip": 8, "mesh": [4, 2], "topology": [2, 1, 1],
        "chips_available": 2, "cores_used": 7, "cores_lower_bound": 5, "cores_over_bound": 1.4, "cores_available": 16,
        "chips_used": 2, "timesteps_per_spike_train": 3, "timesteps_per_token": 20, "token_latency_us": 200.0,
        "placement": {"method": "traffic", "rates": "calibration", "spike_hops_per_token": 120.0,
                      "chip_crossings_per_token": 10.0, "greedy_spike_hops_per_token": 150.0,
                      "greedy_chip_crossings_per_token": 12.0, "hops_vs_greedy": 0.8},
        "cores": cores,
        "chips": [{"chip": 0, "cores": 3, "synapse_bits": 3000, "neurons": 192, "core_util": 0.375, "synapse_util": 0.5},
                  {"chip": 1, "cores": 4, "synapse_bits": 3000, "neurons": 256, "core_util": 0.5, "synapse_util": 0.6}],
        "layers": [{"layer": "0", "cores": 3, "lower_bound": 2, "synapse_bits": 3000, "neurons": 192},
                   {"layer": "1", "cores": 3, "lower_bound": 2, "synapse_bits": 2000, "neurons": 192},
                   {"layer": "head", "cores": 1, "lower_bound": 1, "synapse_bits": 1000, "neurons": 64}],
        "chip_traffic": [[0, 1, 10.0], [1, 0, 2.5]] if traffic else [],
        "stages": {"L0.qkv": {"first": 1, "last": 3}, "head": {"first": 15, "last": 18}},
    }


def big_report(n_chips=40, n_cores=3000, seed=0):
    """n_chips on a 4 x 5 x 2 topology with an 8 x 16 mesh per chip, filled with random cores."""
    rng = np.random.default_rng(seed)
    per_chip = -(-n_cores // n_chips)
    cores = [_core(i, i // per_chip, [[(i % per_chip) % 8, (i % per_chip) // 8]], layer=int(rng.integers(0, 33)),
                   kind=TYPES[i % 5], util=float(rng.random())) for i in range(n_cores)]
    src, dst = rng.integers(0, n_chips, 500), rng.integers(0, n_chips, 500)
    pairs = sorted({(int(a), int(b)) for a, b in zip(src, dst) if a != b})
    report = small_report()
    report.update({
        "target": "big", "mesh": [8, 16], "topology": [4, 5, 2], "chips_available": n_chips, "cores_per_chip": 128,
        "cores_used": n_cores, "cores_lower_bound": 2500, "cores_over_bound": 1.2, "chips_used": n_chips,
        "cores": cores,
        "chips": [{"chip": c, "cores": per_chip, "synapse_bits": 10**6, "neurons": 5000,
                   "core_util": float(rng.random()), "synapse_util": 0.3} for c in range(n_chips)],
        "layers": [{"layer": str(k) if k < 32 else "head", "cores": 90, "lower_bound": 75, "synapse_bits": 10**6,
                    "neurons": 4000} for k in range(33)],
        "chip_traffic": [[a, b, float(10 ** rng.uniform(0, 5))] for a, b in pairs],  # spans 5 orders: log scale
    })
    return report


class _Parse(HTMLParser):
    """Counts tags and collects text, checking the page parses."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page):
    p = _Parse()
    p.feed(page)
    return p


def test_small_report_page():
    page = format_html(small_report())
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3  # utilisation, cores per layer (with the totals), chip traffic
    assert "tiny&lt;chip&gt;" in page and "tiny<chip>" not in page  # escaped
    assert "test &amp; check" in page
    p = parse(page)
    text = " ".join(p.text)
    # nothing fetched from outside: no scripts, no links, images only as inline data
    assert not [t for t, a in p.tags if t in ("script", "link", "iframe")]
    assert all(a.get("xlink:href", "data:").startswith("data:") for t, a in p.tags if t == "image")
    # summary figures
    assert "1.400 x the bound" in text and "0.800 x the baseline" in text and "traffic" in text
    # the tables: one row per layer and per chip, chip coordinates from the topology
    rows = [t for t, _ in p.tags if t == "tr"]
    assert len(rows) == (1 + 3) + (1 + 2) + (1 + 2)  # layers, chips, stages (each with its header)
    assert "1, 0, 0" in text and "head" in text
    assert "no chip-to-chip traffic" not in page


def test_element_ids_unique_per_figure():
    page = format_html(small_report())
    ids = re.findall(r'<(?:clipPath|image|path)[^>]* id="([^"]+)"', page)
    clip = [i for i in ids if not i.startswith("DejaVu")]  # glyphs repeat, with identical definitions
    assert len(clip) == len(set(clip))


def test_deterministic():
    assert format_html(small_report()).encode() == format_html(small_report()).encode()


def test_no_traffic_note():
    page = format_html(small_report(traffic=False))
    assert "no chip-to-chip traffic" in page
    assert page.count("<svg") == 2


def test_span_two_core_fills_both_positions():
    """The neuron unit's second position gets its utilisation: changing its util changes the plot."""
    a, b = small_report(), small_report()
    b["cores"][4]["synapse_util"] = 0.0
    assert format_html(a) != format_html(b)
    c = small_report()
    c["cores"][4]["positions"] = [[1, 0]]  # drop the second position: plot 1 changes too
    assert format_html(a) != format_html(c)


def test_missing_optional_keys():
    """Older reports without placement, mesh, topology, positions or chip_traffic still render."""
    r = small_report()
    for k in ("placement", "mesh", "topology", "chip_traffic", "stages", "cores_over_bound"):
        del r[k]
    for c in r["cores"]:
        del c["positions"]
    for lay in r["layers"]:
        del lay["lower_bound"]
    page = format_html(r)
    assert page.count("<svg") == 2 and "no chip-to-chip traffic" in page
    assert "spike-hops" not in page


def test_big_report_system_level():
    r = big_report()
    t = time.perf_counter()
    page = format_html(r)
    assert time.perf_counter() - t < 20
    assert page.count("<svg") == 3
    assert "chips at z = 0" in page and "chips at z = 1" in page  # 40 chips > 16: one panel per z-plane
    assert "chip 0<" not in page
    assert "(log scale)" in page  # traffic spans 5 orders of magnitude
    p = parse(page)
    assert sum(t == "tr" for t, _ in p.tags) == (1 + 33) + (1 + 40) + (1 + 2)
    assert "3, 4, 1" in " ".join(p.text)  # chip 39 on the 4 x 5 x 2 topology
    assert page == format_html(big_report())


def test_huge_report_is_quick():
    r = big_report(n_chips=240, n_cores=30000)
    r["topology"] = [8, 8, 4]
    t = time.perf_counter()
    page = format_html(r)
    assert time.perf_counter() - t < 30
    assert page.count("<svg") == 3 and len(page) < 5_000_000
