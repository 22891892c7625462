"""Rich rendering of stored results: units in headers, null energy never shown as 0."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from rich.console import Console

from lem.coordinator.results.view import render_campaign_detail, render_campaign_list
from lem.coordinator.store.results_store import Store, new_id
from lem.protocol.config import ExperimentConfig, ModelConfig, load_key
from lem.protocol.result_payload import replace_fields
from tests.test_store import NO_NVML, measurement

Dtype = Literal["auto", "float32", "float16", "bfloat16"]


def text_of(*renderables: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    for r in renderables:
        console.print(r)
    return console.export_text()


def campaign_with(store: Store, energy_j: float | None) -> tuple[str, str]:
    cfg = ExperimentConfig(
        name="tiny-b4", batch_size=4, model=ModelConfig(source="random", name="llama-3.2-1b")
    )
    exp = new_id("e")
    campaign_id = store.create_campaign("demo", "demo.yaml", "h", 2, [(exp, cfg, load_key(cfg))])
    store.record_measurement(measurement(exp, 0, tok_per_s=120.0, energy_j=energy_j))
    store.record_measurement(measurement(exp, 1, tok_per_s=140.0, energy_j=energy_j))
    return campaign_id, exp


def test_list_shows_units_and_energy(tmp_path: Path) -> None:
    with Store(tmp_path / "lem.db") as store:
        campaign_id, _ = campaign_with(store, energy_j=31.488)  # 0.123 J per output token
        out = text_of(*render_campaign_list(store.list_campaigns()))
    assert "tok/s" in out and "J/tok" in out
    assert campaign_id in out
    assert "130.0" in out  # median of 120 and 140 tok/s
    assert "0.123" in out


def test_list_shows_null_energy_with_reason(tmp_path: Path) -> None:
    with Store(tmp_path / "lem.db") as store:
        campaign_with(store, energy_j=None)
        out = text_of(*render_campaign_list(store.list_campaigns()))
    assert "null [1]" in out and f"[1] null because: {NO_NVML}" in out
    row = next(line for line in out.splitlines() if "null [1]" in line)
    assert "0.000" not in row and " 0 " not in row.split("null [1]")[0].rsplit("│", 3)[-1]


def test_empty_list(tmp_path: Path) -> None:
    with Store(tmp_path / "lem.db") as store:
        out = text_of(*render_campaign_list(store.list_campaigns()))
    assert "no campaigns recorded yet" in out


def test_detail_rows(tmp_path: Path) -> None:
    with Store(tmp_path / "lem.db") as store:
        campaign_id, exp = campaign_with(store, energy_j=31.488)
        store.record_failure(exp, 2, "CUDA out of memory", "w-1")
        out = text_of(*render_campaign_detail(store.campaign_detail(campaign_id)))
    for expected in (
        campaign_id,
        "demo.yaml",
        "tiny-b4",
        "random:llama-3.2-1b",
        "tok/s",
        "J/tok",
        "W",
        "0.123",
        "1 [1]",
        "[1] failed: CUDA out of memory",
    ):
        assert expected in out, expected


def test_detail_null_energy(tmp_path: Path) -> None:
    with Store(tmp_path / "lem.db") as store:
        campaign_id, _ = campaign_with(store, energy_j=None)
        out = text_of(*render_campaign_detail(store.campaign_detail(campaign_id)))
    assert "null [1]" in out and f"[1] null because: {NO_NVML}" in out
    assert "0.000" not in out


def test_detail_shows_net_energy_and_flags(tmp_path: Path) -> None:
    with Store(tmp_path / "lem.db") as store:
        exp = new_id("e")
        config = ExperimentConfig(name="net")
        campaign_id = store.create_campaign("c", None, None, 1, [(exp, config, load_key(config))])
        m = replace_fields(
            measurement(exp, 0, tok_per_s=100.0, energy_j=25.6),
            net_energy_j=12.8,
            net_energy_per_output_token_j=0.05,
            energy_bound_j=0.5,
            flags=["short_window"],
        )
        store.record_measurement(m)
        out = text_of(*render_campaign_detail(store.campaign_detail(campaign_id)))
    assert "net J/tok" in out and "0.05" in out and "0.1 " in out  # gross 25.6 J / 256 tok
    assert "±2%" in out and "flag short_window" in out


def test_detail_shows_the_confidence_interval_over_cycles(tmp_path: Path) -> None:
    with Store(tmp_path / "lem.db") as store:
        campaign_id, _ = campaign_with(store, energy_j=31.488)  # two equal cycles
        out = text_of(*render_campaign_detail(store.campaign_detail(campaign_id)))
        exp = new_id("e")
        config = ExperimentConfig(name="spread")
        other = store.create_campaign("c2", None, None, 3, [(exp, config, load_key(config))])
        for cycle, energy_j in enumerate([25.6, 28.16, 30.72]):  # 0.10, 0.11, 0.12 J/tok
            store.record_measurement(measurement(exp, cycle, tok_per_s=100.0, energy_j=energy_j))
        spread = text_of(*render_campaign_detail(store.campaign_detail(other)))
    assert "CI95" in out and "±0%" in out
    # t(2) = 4.303; stdev 0.01; mean 0.11: 4.303 * 0.01 / sqrt(3) / 0.11 = 22.6%
    assert "±23%" in spread


def test_detail_shows_the_cv_over_cycles_and_flags_it_above_five_percent(tmp_path: Path) -> None:
    with Store(tmp_path / "lem.db") as store:
        ids = {}
        for name, energies_j in {
            "steady": [25.6, 25.856, 26.112],  # 0.100, 0.101, 0.102 J/tok: CV 0.99%
            "spread": [25.6, 28.16, 30.72],  # 0.10, 0.11, 0.12 J/tok: CV 9.1%
        }.items():
            exp = new_id("e")
            config = ExperimentConfig(name=name)
            ids[name] = store.create_campaign(
                name, None, None, 3, [(exp, config, load_key(config))]
            )
            for cycle, energy_j in enumerate(energies_j):
                store.record_measurement(
                    measurement(exp, cycle, tok_per_s=100.0, energy_j=energy_j)
                )
        steady = text_of(*render_campaign_detail(store.campaign_detail(ids["steady"])))
        spread = text_of(*render_campaign_detail(store.campaign_detail(ids["spread"])))
        summary = store.campaign_detail(ids["spread"]).experiments[0]
    assert summary.std_energy_per_output_token_j is not None
    assert abs(summary.std_energy_per_output_token_j - 0.01) < 1e-12
    assert summary.cv_energy_per_output_token is not None
    assert abs(summary.cv_energy_per_output_token - 0.01 / 0.11) < 1e-12
    assert "0.99%" in steady and "flag high_cv" not in steady
    assert "9.1% [1]" in spread and "[1] flag high_cv" in spread


def test_detail_shows_ttft_and_itl_percentiles_and_goodput_when_set(tmp_path: Path) -> None:
    from tests.test_store_latency import with_latency

    with Store(tmp_path / "lem.db") as store:
        campaign_id, _ = campaign_with(store, energy_j=31.488)  # no latency: "-"
        without = text_of(*render_campaign_detail(store.campaign_detail(campaign_id)))
        cfg = ExperimentConfig(name="timed")
        timed = new_id("e")
        other = store.create_campaign("t", "t.yaml", "h", 1, [(timed, cfg, load_key(cfg))])
        recorded = with_latency(timed)
        store.record_measurement(recorded)
        out = text_of(*render_campaign_detail(store.campaign_detail(other)))
    assert "TTFT ms" in without and "ITL ms" in without and "good" not in without
    latency = recorded.latency
    assert latency.ttft_ms is not None and latency.itl_ms is not None
    assert latency.goodput is not None and latency.goodput.good_share is not None
    ttft = f"{latency.ttft_ms.p50_ms:.3g}/{latency.ttft_ms.p99_ms:.3g}"
    itl = f"{latency.itl_ms.p50_ms:.3g}/{latency.itl_ms.p99_ms:.3g}"
    row = next(line for line in out.splitlines() if "timed" in line)
    assert ttft in row and itl in row
    assert f"{latency.goodput.good_share * 100:.0f}%" in row and "good" in out


def test_names_are_shown_as_they_are_not_read_as_markup(tmp_path: Path) -> None:
    """A grid experiment's name holds brackets (``fp32[batch_size=1]``): rich markup would
    read ``[batch_size=1]`` as a style and drop it."""
    from tests.synthetic_results import add_campaign, config

    names = ["fp32[batch_size=1,input_tokens=16]", "[bold]b2[/bold]"]
    with Store(tmp_path / "lem.db") as store:
        campaign_id, _ = add_campaign(
            store, "[red]grid[/red]", [config(1, names[0]), config(2, names[1])], [[0.5], [0.4]]
        )
        listing = text_of(*render_campaign_list(store.list_campaigns()))
        shown = text_of(*render_campaign_detail(store.campaign_detail(campaign_id)))
    assert "[red]grid[/red]" in listing
    assert "[red]grid[/red]" in shown
    assert all(name in shown for name in names), shown


def _column(out: str, header: str) -> str:
    """Column ``header``'s cells of the first table in ``out``, top to bottom, joined: a
    cell folded onto several lines comes back whole."""
    lines = out.splitlines()
    head = next(line for line in lines if f" {header} " in line and "┃" in line)
    index = [cell.strip() for cell in head.split("┃")].index(header)
    body = lines[lines.index(head) + 2 :]
    cells = [line.split("│")[index].strip() for line in body if line.startswith("│")]
    return "".join(cells)


GRID_NAME = "fp32[batch_size=1,input_tokens=16,num_prompts=8,pytorch.cache_implementation=dynamic]"


@pytest.mark.parametrize("width", [40, 80, 120])
def test_narrow_terminals_keep_ids_and_names_whole(tmp_path: Path, width: int) -> None:
    """At 80 and 120 columns every id and name prints whole, on one line where it is short;
    the columns left out are named under the table; nothing is cut with an ellipsis. At 40
    an id may fold onto two lines, but is still all there."""
    from tests.synthetic_results import add_campaign, config

    with Store(tmp_path / "lem.db") as store:
        first, _ = add_campaign(
            store,
            "llama-batch-sweep",
            [config(1, "batch_size=1"), config(8, "batch_size=8"), config(2, GRID_NAME)],
            [[0.5, None], [0.4, 0.41], [0.45, 0.46]],
            failed_cycles=[(0, 2)],
        )
        second, _ = add_campaign(store, "cpu-check", [config(1)], [[None]])
        console = Console(record=True, width=width, color_system=None)
        for renderable in render_campaign_list(store.list_campaigns()):
            console.print(renderable)
        listing = console.export_text()
        for renderable in render_campaign_detail(store.campaign_detail(first)):
            console.print(renderable)
        shown = console.export_text()
    for out in (listing, shown):
        assert "…" not in out
        assert max(len(line) for line in out.splitlines()) <= width
    assert _column(listing, "ID") == first + second
    assert _column(listing, "Name") == "llama-batch-sweep" + "cpu-check"
    assert _column(shown, "Name") == "batch_size=1" + "batch_size=8" + GRID_NAME
    assert _column(shown, "Model") == "random:llama-3.2-1b" * 3
    assert _column(shown, "#") == "012"
    if width >= 80:
        rows = [line for line in listing.splitlines() if line.startswith("│")]
        assert [r.split("│")[1].strip() for r in rows] == [first, second]
        assert "llama-batch-sweep" in listing and "batch_size=8 " in shown
        assert "random:llama-3.2-1b " in shown
    for out, headers in ((listing, LIST_HEADERS), (shown, DETAIL_HEADERS)):
        head = next(line for line in out.splitlines() if "┃" in line)
        shown_headers = {cell.strip() for cell in head.split("┃")}
        left_out = [h for h in headers if h not in shown_headers]
        assert {"J/tok", "Name"} <= shown_headers
        if left_out:
            note = " ".join(out.split(f"Left out at {width} columns wide: ")[1].split())
            assert note.startswith(", ".join(left_out) + " ")
        else:
            assert "Left out" not in out


LIST_HEADERS = ["ID", "Name", "Created", "Status", "Exps", "Cyc", "OK", "Fail", "tok/s", "J/tok"]
DETAIL_HEADERS = ["#", "Name", "Model", "dtype", "Batch", "In", "Out", "OK", "Fail", "tok/s",
    "J/tok", "CI95", "CV", "net J/tok", "bound", "W", "TTFT ms", "ITL ms"]  # fmt: skip


def test_a_wide_terminal_shows_every_column(tmp_path: Path) -> None:
    with Store(tmp_path / "lem.db") as store:
        campaign_id, _ = campaign_with(store, energy_j=31.488)
        out = text_of(*render_campaign_detail(store.campaign_detail(campaign_id)))
    head = next(line for line in out.splitlines() if "┃" in line)
    assert [cell.strip() for cell in head.split("┃")][1:-1] == DETAIL_HEADERS
    assert "Left out" not in out


def test_detail_shows_the_dtype_that_ran_beside_the_configs_auto(tmp_path: Path) -> None:
    ran: dict[Dtype, str | None] = {"auto": "float32", "bfloat16": "bfloat16", "float16": None}
    with Store(tmp_path / "lem.db") as store:
        configs = [
            ExperimentConfig(name=f"as-{dtype}", model=ModelConfig(dtype=dtype)) for dtype in ran
        ]
        ids = [new_id("e") for _ in configs]
        campaign_id = store.create_campaign(
            "dtypes",
            "d.yaml",
            "h",
            1,
            [(i, c, load_key(c)) for i, c in zip(ids, configs, strict=True)],
        )
        for exp, resolved in zip(ids, ran.values(), strict=True):
            store.record_measurement(
                replace_fields(measurement(exp, energy_j=None), resolved_dtype=resolved)
            )
        out = text_of(*render_campaign_detail(store.campaign_detail(campaign_id)))
    rows = {line.split("│")[2].strip(): line for line in out.splitlines() if "as-" in line}
    assert "auto→float32" in rows["as-auto"]
    assert "bfloat16" in rows["as-bfloat16"] and "→" not in rows["as-bfloat16"]
    assert "float16" in rows["as-float16"] and "→" not in rows["as-float16"]  # engine silent


def test_stored_names_are_shown_escaped_never_as_markup(tmp_path: Path) -> None:
    """A name with rich markup or a terminal escape (a store lem did not write, or a
    ``[/b]`` a campaign file allows) is shown as written, escaped: no traceback."""
    from click.testing import CliRunner

    from lem.coordinator.cli.main import main
    from tests.synthetic_results import add_campaign, config

    name = "a [/bold] [red]x\x1b[2J"
    db = tmp_path / "lem.db"
    with Store(db) as store:
        a, _ = add_campaign(store, name, [config(1, name=name)], [[0.5, 0.6]])
        b, _ = add_campaign(store, "b", [config(1, name=f"{name} b")], [[0.5, 0.6]])
    for argv in (["results", "list"], ["results", "show", a], ["compare", a, b]):
        done = CliRunner().invoke(main, [*argv, "--store", str(db)], color=True)
        assert done.exit_code == 0, (argv, done.output, done.exception)
        assert "a [/bold] [red]x\\x1b[2J" in done.stdout and "\x1b" not in done.stdout, argv
