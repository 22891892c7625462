"""``lem report``: the HTML page of real CPU campaigns (figures, flags, environment, config
provenance, escaping, nulls with reasons), its bad-input exits and the Pareto front."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from html import escape as html_escape
from pathlib import Path

import pytest

from lem.coordinator.report.rows import ExperimentRow, pareto_front
from lem.coordinator.report.sweep import ExperimentInfo, swept_axes
from lem.coordinator.results.view import FLAG_MEANINGS
from lem.coordinator.store.schema import SCHEMA_VERSION
from tests.report_stores import (
    TRICKY_NAME,
    UUIDS,
    cpu_campaign,
    gpu_like_campaign,
    lem_report,
)

pytest.importorskip("matplotlib", reason="lem report needs the report extra (matplotlib)")
IMG = re.compile(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


@pytest.fixture(scope="module")
def gpu_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A sleep-backend campaign on a replayed NVML, and its report's HTML."""
    folder = tmp_path_factory.mktemp("gpu-like")
    db, campaign_id = gpu_like_campaign(folder)
    done = lem_report(campaign_id, "-o", str(folder / "report"), "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (folder / "report").iterdir()) == ["index.html"]
    return db, campaign_id, (folder / "report" / "index.html").read_text()


@pytest.fixture(scope="module")
def cpu(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A lem-tiny PyTorch campaign on CPU (token timings, no GPU energy): its report."""
    folder = tmp_path_factory.mktemp("cpu")
    db, campaign_id = cpu_campaign(folder)
    done = lem_report(campaign_id[:10], "-o", str(folder / "out"), "--store", str(db))
    assert done.returncode == 0, done.stderr
    return (folder / "out" / "index.html").read_text()


def images(html: str) -> dict[str, str]:
    """alt text → decoded SVG of every embedded figure."""
    return {alt: base64.b64decode(data).decode() for data, alt in IMG.findall(html)}


def test_report_embeds_every_figure_of_a_gpu_like_campaign(gpu_like: tuple[Path, str, str]) -> None:
    html = gpu_like[2]
    figures = images(html)
    assert len(figures) == html.count("<img ")  # every image is an embedded SVG
    assert all(svg.lstrip().startswith("<?xml") and "<svg" in svg for svg in figures.values())
    by_kind = {k: [a for a in figures if k in a] for k in ("against batch_size", "Pareto", "Power")}
    assert len(by_kind["against batch_size"]) == 1 and len(by_kind["Pareto"]) == 1
    assert len(by_kind["Power"]) == 4  # two experiments × two cycles, one timeline each
    axis_svg = figures[by_kind["against batch_size"][0]]
    assert "J per output token (gross)" in axis_svg and "net of idle" in axis_svg
    timeline = figures[by_kind["Power"][0]]
    assert "temperature, °C" in timeline and "not recorded" not in timeline
    assert "Latency distributions" in html and "No request latencies" in html
    assert "<script" not in html.lower() and not re.search(r"(src|href)=\"https?:", html)


def test_report_shows_flags_with_their_meanings(gpu_like: tuple[Path, str, str]) -> None:
    html = gpu_like[2]
    for flag in ("short_window", "net_energy_clamped"):
        assert f'id="flag-{flag}"' in html and f'href="#flag-{flag}"' in html
        assert html_escape(FLAG_MEANINGS[flag]) in html
    assert 'class="flagged"' in html  # the flagged J/token figures are marked red
    assert "cycle 0; #0 batch_size=1, cycle 1" in html  # which figures carry it


def test_report_shows_environment_config_provenance_and_method(
    gpu_like: tuple[Path, str, str],
) -> None:
    db, campaign_id, html = gpu_like
    env = html[html.index('id="environment"') : html.index('id="config"')]
    for uuid in UUIDS:
        assert uuid in env
    assert "NVIDIA H100 80GB HBM3" in env and "580.95.05" in env and "NVML gave none" in env
    assert "700 W" in env  # the first GPU's limit; the second reports none:
    assert "NVML gave no power_limit_w" in env or "not reported" in env
    assert f"<th>Store schema version</th><td>{SCHEMA_VERSION}</td>" in env
    assert "application SM 1980 / memory 2619 MHz; maximum SM 1980 / memory 2619 MHz" in env
    assert "observed SM clock 1980–1980 MHz" in env
    assert "<th>CPU</th>" in env and "<th>Logical CPUs</th>" in env and "<th>OS</th>" in env
    assert f"<th>Results recorded under schema</th><td>{SCHEMA_VERSION}</td>" in env
    config = html[html.index('id="config"') : html.index('id="method"')]
    assert config.count("<details") == 3  # two experiments and the campaign file
    assert "grid.batch_size" in config and "campaign.yaml" in config
    method = html[html.index('id="method"') :]
    assert "nvml_energy_counter (4 GPU-windows)" in method and "quantisation bound" in method
    assert campaign_id in html and str(db) in html


def test_report_escapes_every_stored_text(gpu_like: tuple[Path, str, str]) -> None:
    html = gpu_like[2]
    assert "<b>check</b>" not in html
    assert "report &lt;b&gt;check&lt;/b&gt; &amp; &quot;quotes&quot;" in html
    assert TRICKY_NAME not in html


def test_report_of_a_cpu_campaign_shows_nulls_with_reasons_and_latency(cpu: str) -> None:
    figures = images(cpu)
    assert [a for a in figures if "CDFs of time to first token" in a]
    assert not [a for a in figures if "Pareto" in a or "Power" in a]
    summary = cpu[cpu.index('id="summary"') : cpu.index('id="flags"')]
    assert "NVML could not start" in summary  # why J/token is missing, in the notes
    rows = re.findall(r"<tr>(.*?)</tr>", summary[summary.index("<tbody>") :])
    assert len(rows) == 2
    for row in rows:
        cells = re.findall(r"<td>(.*?)</td>", row)
        energy, cv, net, power = cells[4], cells[5], cells[6], cells[8]
        for cell in (energy, cv, net, power):  # null, with a numbered reason: never 0
            assert cell.startswith('<span class="null"') and "—" in cell, cell
    assert "No J/token to plot" in cpu and "No telemetry" in cpu
    assert "No figure of this campaign carries a flag" in cpu


def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    gpu_like: tuple[Path, str, str], tmp_path: Path
) -> None:
    db = gpu_like[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("previous report")
    unknown = lem_report("c-nope", "-o", str(out), "--store", str(db))
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "no campaign with id or id prefix 'c-nope'" in unknown.stderr
    assert [p.name for p in out.iterdir()] == ["index.html"]
    assert (out / "index.html").read_text() == "previous report"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = lem_report(gpu_like[1], "-o", str(blocker / "sub"), "--store", str(db))
    assert unwritable.returncode == 2 and unwritable.stderr.count("\n") == 1
    assert "cannot write the report here" in unwritable.stderr
    missing = lem_report(gpu_like[1], "-o", str(out), "--store", str(tmp_path / "none.db"))
    assert missing.returncode == 2 and "no result store here" in missing.stderr
    assert not (tmp_path / "none.db").exists()


def test_a_dash_is_not_a_report_folder(gpu_like: tuple[Path, str, str], tmp_path: Path) -> None:
    # The fuzz suite found `report ID -o -` writing a folder named "-": "-" is standard
    # output everywhere else in lem, and a report (a folder) cannot go there.
    db, campaign = gpu_like[0], gpu_like[1]
    argv = ["report", campaign, "-o", "-", "--store", str(db)]
    done = subprocess.run(
        [sys.executable, "-m", "lem.coordinator", *argv],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("lem: error: report -o -: a report is a folder")
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_the_command_says_how_to_get_it(
    gpu_like: tuple[Path, str, str], tmp_path: Path
) -> None:
    script = "import sys; sys.modules['matplotlib'] = None\n"
    script += "from lem.coordinator.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", script, "report", gpu_like[1], "-o", str(tmp_path / "r"),
         "--store", str(gpu_like[0])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "needs matplotlib: pip install 'lem[report]'" in done.stderr
    assert not (tmp_path / "r").exists()


def _row(
    position: int, tok_s: float | None, j: float | None, cv: float | None = None
) -> ExperimentRow:
    return ExperimentRow(
        experiment_id=f"e{position}", position=position, name=None, cycles_ok=2,
        cycles_failed=0, mean_energy_per_output_token_j=j, ci95_energy_per_output_token_j=None,
        cv_energy_per_output_token=cv, mean_net_energy_per_output_token_j=None,
        ci95_net_energy_per_output_token_j=None, median_output_tokens_per_s=tok_s,
        median_avg_power_w=None, median_ttft_p50_ms=None, median_itl_p50_ms=None,
        max_energy_relative_bound=None,
    )  # fmt: skip


def test_pareto_front_keeps_the_undominated_and_skips_nulls() -> None:
    rows = [
        _row(0, 100, 0.5),
        _row(1, 200, 0.3),
        _row(2, 150, 0.4),  # beaten by #1 on both
        _row(3, 400, 0.35),
        _row(4, None, 0.1),  # no throughput: not placed
        _row(5, 50, 0.2),
    ]
    front = pareto_front(rows, lambda r: r.median_output_tokens_per_s,
                         lambda r: r.mean_energy_per_output_token_j, maximise_x=True)  # fmt: skip
    assert [r.position for r in front] == [5, 1, 3]
    lowest = pareto_front(rows, lambda r: r.median_output_tokens_per_s,
                          lambda r: r.mean_energy_per_output_token_j, maximise_x=False)  # fmt: skip
    assert [r.position for r in lowest] == [5]
    assert _row(6, 1, 1, cv=0.06).all_flags == ["high_cv"] and not _row(7, 1, 1, 0.05).high_cv


def test_swept_axes_are_the_fields_that_differ_grid_axes_first() -> None:
    def info(i: int, config: dict[str, object], provenance: dict[str, str]) -> ExperimentInfo:
        return ExperimentInfo(f"e{i}", i, f"n{i}", config, provenance)

    grid = {"batch_size": "grid.batch_size"}
    experiments = [
        info(0, {"name": "a", "batch_size": 1, "dtype": "x", "seed": 0}, grid),
        info(1, {"name": "b", "batch_size": 2, "dtype": "y", "seed": 0}, grid),
    ]
    assert swept_axes(experiments) == ["batch_size", "dtype"]
    assert swept_axes(experiments[:1]) == []
