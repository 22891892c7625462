"""The report in a real browser: reports of two real CPU campaigns load in headless
Chromium with every image decoded (naturalWidth > 0), no console or log error, and a
full-page screenshot (kept in the test's tmp_path). A broken page shows the check can fail.

Skipped, with the reason, where no Chromium binary is on PATH (.ci/run installs Debian's
``chromium``) or websocket-client is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import check_page, find_chromium, png_size_px
from tests.report_stores import cpu_campaign, gpu_like_campaign, lem_report

pytest.importorskip("matplotlib", reason="lem report needs the report extra (matplotlib)")
pytest.importorskip("websocket", reason="the DevTools client needs websocket-client (dev extra)")
CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)"
    ),
    pytest.mark.slow,
]


# gpu-like: J/token against batch_size, one Pareto front, 2 experiments × 2 cycles of
# timelines; cpu: the latency ECDFs only (no energy, no telemetry).
@pytest.mark.parametrize(
    ("campaign", "figures"), [(gpu_like_campaign, 6), (cpu_campaign, 1)], ids=["gpu-like", "cpu"]
)
def test_report_loads_in_chromium_with_every_image_and_no_error(
    campaign: object, figures: int, tmp_path: Path
) -> None:
    assert CHROMIUM is not None and callable(campaign)
    db, campaign_id = campaign(tmp_path / "store")
    done = lem_report(campaign_id, "-o", str(tmp_path / "report"), "--store", str(db))
    assert done.returncode == 0, done.stderr
    page = check_page(CHROMIUM, tmp_path / "report" / "index.html", tmp_path)
    assert len(page.images) == figures
    not_loaded = [i for i in page.images if not i["complete"] or i["naturalWidth"] <= 0]
    assert not not_loaded, not_loaded
    assert page.errors == []
    width_px, height_px = png_size_px(page.screenshot)
    assert width_px >= 1000 and height_px > 2000  # the whole page, not one viewport
    assert page.screenshot.stat().st_size > 50_000  # drawn figures and tables, not blank


def test_the_browser_check_sees_a_broken_image_and_a_console_error(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    broken = tmp_path / "broken" / "index.html"
    broken.parent.mkdir()
    broken.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png" alt="gone">'
        '<img src="data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmci'
        'IHdpZHRoPSIxMCIgaGVpZ2h0PSIxMCIvPg==" alt="fine">'
        "<script>console.error('boom')</script></body></html>"
    )
    page = check_page(CHROMIUM, broken, tmp_path)
    widths = {i["alt"]: i["naturalWidth"] for i in page.images}
    assert widths["gone"] == 0 and widths["fine"] == 10
    assert any("console.error: boom" in e for e in page.errors), page.errors
    assert any("missing.png" in e for e in page.errors), page.errors  # the failed load
