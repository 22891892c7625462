"""Foreign compute processes on a measured GPU flag the figure; our own PID does not."""

from __future__ import annotations

from lem.workers.metering.contamination import ProcessWatch, foreign_pids
from lem.workers.workload.scenarios.window import Edges


class ScriptedProcesses:
    def __init__(self, per_call: list[dict[str, set[int] | str]]) -> None:
        self.per_call = per_call
        self.calls = 0

    def compute_pids(self, uuid: str) -> set[int] | str:
        answer = self.per_call[min(self.calls, len(self.per_call) - 1)][uuid]
        self.calls += 1
        return answer


def test_foreign_pids_rules() -> None:
    assert foreign_pids({10, 11}, own_pid=10) == {11}
    assert foreign_pids({10}, own_pid=10) == set()
    assert foreign_pids({999}, own_pid=10) == set()  # our context under a host PID
    assert foreign_pids({998, 999}, own_pid=10) == {998, 999}  # one of them is foreign
    assert foreign_pids(set(), own_pid=10) == set()


def test_only_our_process_leaves_the_figure_clean() -> None:
    watch = ProcessWatch(ScriptedProcesses([{"A": {10}, "B": {10}}]), ["A", "B"], own_pid=10)
    watch.begin()
    watch.end()
    assert watch.flags() == [] and watch.foreign == {}


def test_a_process_appearing_at_the_end_contaminates() -> None:
    lister = ScriptedProcesses([{"A": {10}}, {"A": {10, 4242}}])
    watch = ProcessWatch(lister, ["A"], own_pid=10)
    watch.begin()
    watch.end()
    assert watch.flags() == ["contaminated"]
    assert watch.describe() == "A: PIDs [4242]"


def test_unreadable_process_list_is_reported() -> None:
    watch = ProcessWatch(ScriptedProcesses([{"A": "Not Supported"}]), ["A"], own_pid=10)
    watch.begin()
    watch.end()
    assert watch.flags() == ["processes_unknown"] and watch.unreadable == ["Not Supported"] * 2


def test_edges_begin_in_order_and_end_in_reverse() -> None:
    calls: list[str] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def begin(self) -> None:
            calls.append(f"begin {self.name}")

        def end(self) -> None:
            calls.append(f"end {self.name}")

    edges = Edges([Named("processes"), Named("energy")])
    edges.begin()
    edges.end()
    assert calls == ["begin processes", "begin energy", "end energy", "end processes"]
