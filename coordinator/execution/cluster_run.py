"""What a campaign does differently on a Ray cluster (``RunOptions.cluster``): join it and
find its GPUs, bind the hub where remote workers can reach it, and hand out GPU sets node by
node (ray_cluster.py, ray_launcher.py)."""

from __future__ import annotations

from collections.abc import Iterator

from lem.coordinator.execution.allocator import GpuAllocator
from lem.coordinator.execution.ray_cluster import ClusterError, RayCluster
from lem.coordinator.planning.campaign import CampaignPlan, PlannedExperiment
from lem.coordinator.planning.dispatch_plan import assign_all
from lem.coordinator.planning.grid import LazyExperiments

# Every interface, a free port: workers on other nodes connect to the driver's address.
CLUSTER_ENDPOINT = "tcp://0.0.0.0:*"


def open_cluster(address: str | None) -> RayCluster | None:
    """The joined cluster with its nodes' GPUs found, or None without an address."""
    if address is None:
        return None
    cluster = RayCluster(address)
    try:
        cluster.discover()
    except BaseException:
        cluster.close()
        raise
    return cluster


def cluster_allocator(cluster: RayCluster, largest_request: int) -> GpuAllocator:
    """The allocator of every GPU of the cluster, sets kept within one node; refuses a
    request no node can hold."""
    ordered = sorted(cluster.all_gpus(), key=lambda g: (cluster.node_of[g.uuid], g.index))
    allocator = GpuAllocator([g.uuid for g in ordered], dict(cluster.node_of))
    if largest_request > allocator.largest_node():
        raise ClusterError(
            f"--cluster {cluster.address}: an experiment needs {largest_request} GPU(s) on one "
            f"node; the largest node has {allocator.largest_node()}"
        )
    return allocator


def join_checked(plan: CampaignPlan, address: str) -> RayCluster:
    """The joined cluster, once every GPU request of ``plan`` fits on one of its nodes
    (``ClusterError``, one line, before anything is stored)."""
    cluster = open_cluster(address)
    assert cluster is not None
    try:
        if any(exp.config.gpu.asks for exp in _covering_gpu(plan)):
            raise ClusterError(
                f"--cluster {address}: gpu power limits and clocks are set on one host only "
                "for now (lem docs cluster)"
            )
        gpus = cluster.all_gpus()
        counts = {len(a.gpu_uuids) for a in assign_all(plan, None, gpus).values()}
        cluster_allocator(cluster, max(counts, default=0))
    except BaseException:
        cluster.close()
        raise
    return cluster


def _covering_gpu(plan: CampaignPlan) -> Iterator[PlannedExperiment]:
    experiments = plan.experiments
    if isinstance(experiments, LazyExperiments):
        return experiments.covering(("gpu",))
    return iter(experiments)
