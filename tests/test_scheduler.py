"""The scheduler: every filter and scorer on snapshots, then the database side end to end."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from models_registry.models import EngineRuntime, Model, ModelVersion, VersionState
from nodes import scheduler, states
from nodes.models import (
    Deployment,
    DesiredState,
    Gpu,
    Node,
    NodeState,
    Worker,
    WorkerEvent,
    WorkerState,
)
from nodes.scheduler import DeviceView, NodeView, Replica
from nodes.tasks import mark_lost_nodes

GIB = 1 << 30


def gpu_node(name: str, gpus: int = 8, memory: int = 80 * GIB, **kw: object) -> NodeView:
    devices = [
        DeviceView(id=i, index=i, kind="gpu", total=memory, free=memory) for i in range(gpus)
    ]
    return NodeView(id=hash(name), name=name, devices=devices, **kw)  # type: ignore[arg-type]


def cpu_node(name: str, memory: int = 16 * GIB) -> NodeView:
    return NodeView(
        id=hash(name),
        name=name,
        devices=[DeviceView(id=1, index=0, kind="cpu", total=memory, free=memory)],
    )


def replica(devices: int = 1, memory: int = 10 * GIB, **kw: object) -> Replica:
    return Replica(deployment_id=1, devices=devices, memory_per_device=memory, **kw)  # type: ignore[arg-type]


# --- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "fresh", "words"),
    [
        ("lost", True, "is lost"),
        ("cordoned", True, "is cordoned"),
        ("draining", True, "is draining"),
        ("ready", False, "has not sent a recent heartbeat"),
    ],
)
def test_it_refuses_nodes_that_are_not_ready(state: str, fresh: bool, words: str) -> None:
    node = gpu_node("n1", state=state, heartbeat_fresh=fresh)
    assert words in (scheduler.node_is_ready(node, replica()) or "")
    assert scheduler.place([node], replica()) is None


def test_it_accepts_a_ready_node_with_a_fresh_heartbeat() -> None:
    assert scheduler.node_is_ready(gpu_node("n1"), replica()) is None


def test_it_refuses_nodes_lacking_the_selected_labels() -> None:
    node = gpu_node("n1", labels={"zone": "b"})
    wanted = replica(label_selector={"zone": "a", "gpu": "h200"})
    assert scheduler.labels_match(node, wanted) == "lacks label gpu=h200, zone=a"
    assert (
        scheduler.labels_match(gpu_node("n2", labels={"zone": "a", "gpu": "h200"}), wanted) is None
    )


def test_it_keeps_tensor_parallel_replicas_on_one_node() -> None:
    small = [gpu_node("n1", gpus=2), gpu_node("n2", gpus=2)]
    wanted = replica(devices=4)
    assert "has 2 devices; a replica needs 4 on one node" in (
        scheduler.enough_devices(small[0], wanted) or ""
    )
    assert scheduler.place(small, wanted) is None
    placement = scheduler.place([*small, gpu_node("n3", gpus=4)], wanted)
    assert placement is not None
    assert placement.node.name == "n3"
    assert sorted(d.index for d in placement.devices) == [0, 1, 2, 3]


def test_it_refuses_devices_without_enough_free_memory() -> None:
    node = gpu_node("n1", gpus=2, memory=24 * GIB)
    reason = scheduler.enough_memory(node, replica(memory=40 * GIB))
    assert reason == "only 0 of 2 devices can take 40.0 GiB (needs 1): largest free 24.0 GiB"


def test_it_never_puts_two_workers_on_one_gpu() -> None:
    node = gpu_node("n1", gpus=1)
    assert scheduler.place([node], replica(memory=GIB)) is not None
    assert scheduler.place([node], replica(memory=GIB)) is None
    assert "1 in use by other workers" in (scheduler.enough_memory(node, replica()) or "")


def test_a_cpu_node_takes_several_workers_while_their_memory_fits() -> None:
    node = cpu_node("c1", memory=10 * GIB)
    assert scheduler.place([node], replica(memory=4 * GIB)) is not None
    assert scheduler.place([node], replica(memory=4 * GIB)) is not None
    assert scheduler.place([node], replica(memory=4 * GIB)) is None
    assert node.devices[0].free == 2 * GIB


# --- scorers ---------------------------------------------------------------------------------


def test_bin_packing_fills_the_fuller_node_first() -> None:
    empty, half = gpu_node("a-empty"), gpu_node("b-half")
    for device in half.devices[:4]:
        device.take(GIB)
    placement = scheduler.place([empty, half], replica())
    assert placement is not None and placement.node.name == "b-half"


def test_spreading_prefers_the_emptier_node() -> None:
    empty, half = gpu_node("b-empty"), gpu_node("a-half")
    for device in half.devices[:4]:
        device.take(GIB)
    placement = scheduler.place([empty, half], replica(strategy="spread"))
    assert placement is not None and placement.node.name == "b-empty"


def test_replicas_of_one_deployment_go_to_different_nodes_even_when_bin_packing() -> None:
    nodes = [gpu_node("n1"), gpu_node("n2"), gpu_node("n3")]
    names = [scheduler.place(nodes, replica()).node.name for _ in range(3)]  # type: ignore[union-attr]
    assert sorted(names) == ["n1", "n2", "n3"]


def test_a_lone_node_still_takes_every_replica() -> None:
    node = gpu_node("n1")
    assert all(scheduler.place([node], replica()) for _ in range(3))
    assert node.replicas[1] == 3


def test_ties_go_to_the_node_whose_name_sorts_first() -> None:
    placement = scheduler.place([gpu_node("zz"), gpu_node("aa")], replica())
    assert placement is not None and placement.node.name == "aa"


def test_refusals_group_identical_reasons_and_name_each_node() -> None:
    nodes = [gpu_node(f"n{i}", state="lost") for i in range(7)] + [
        gpu_node("z", labels={"zone": "b"})
    ]
    text = scheduler.describe_refusals(
        scheduler.refusals(nodes, replica(label_selector={"zone": "a"}))
    )
    assert text == ("n0, n1, n2, n3, n4 and 2 more: is lost (no heartbeat); z: lacks label zone=a")
    assert scheduler.describe_refusals({}) == "no nodes are registered"


# --- the database side -----------------------------------------------------------------------


@pytest.fixture
def version(db: None, tmp_path: Path) -> ModelVersion:
    runtime = EngineRuntime.objects.create(name="rt", version="0.32.0", python_path="/bin/false")
    model = Model.objects.create(name="tiny")
    return ModelVersion.objects.create(
        model=model,
        label="v1",
        weights_source=str(tmp_path),
        weights_size_bytes=2 * GIB,
        kv_cache_bytes=GIB,
        runtime=runtime,
        state=VersionState.ACTIVE,
    )


def make_node(name: str, gpus: int = 2, memory: int = 24 * GIB, **fields: object) -> Node:
    node = Node.objects.create(
        name=name, address="127.0.0.1", last_heartbeat_at=timezone.now(), **fields
    )
    for index in range(gpus):
        Gpu.objects.create(
            node=node,
            index=index,
            uuid=f"GPU-{name}-{index}",
            name="Test GPU",
            memory_total_bytes=memory,
        )
    return node


def live_workers(deployment: Deployment) -> list[Worker]:
    return list(
        deployment.workers.exclude(state=WorkerState.STOPPED)
        .filter(desired_state=DesiredState.RUNNING)
        .order_by("id")
    )


def test_the_memory_estimate_is_weights_and_kv_cache_split_over_devices_plus_overhead(
    version: ModelVersion, settings: object
) -> None:
    settings.SCHEDULER_MEMORY_OVERHEAD_BYTES = GIB  # type: ignore[attr-defined]
    assert scheduler.memory_per_device(version, 1) == 4 * GIB
    assert scheduler.memory_per_device(version, 3) == 2 * GIB


def test_without_a_recorded_size_the_estimate_measures_the_weights_directory(
    version: ModelVersion, tmp_path: Path, settings: object
) -> None:
    settings.SCHEDULER_MEMORY_OVERHEAD_BYTES = 0  # type: ignore[attr-defined]
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    version.weights_size_bytes = None
    version.kv_cache_bytes = 24
    assert scheduler.memory_per_device(version, 1) == 1024


def test_saving_a_deployment_places_its_replicas_on_distinct_nodes(
    version: ModelVersion, django_capture_on_commit_callbacks: object
) -> None:
    make_node("n1")
    make_node("n2")
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        deployment = Deployment.objects.create(model_version=version, name="d", replicas=2)
    workers = live_workers(deployment)
    assert [w.state for w in workers] == [WorkerState.PENDING] * 2
    assert sorted(w.node.name for w in workers) == ["n1", "n2"]  # type: ignore[union-attr]
    assert all(w.gpus.count() == 1 for w in workers)
    deployment.refresh_from_db()
    assert deployment.unschedulable_reason == ""


def test_running_the_scheduler_twice_changes_nothing_the_second_time(
    version: ModelVersion,
) -> None:
    make_node("n1")
    Deployment.objects.create(model_version=version, name="d", replicas=2)
    scheduler.schedule()
    again = scheduler.schedule()
    assert (again.created, again.drained, again.stopped) == ([], [], [])
    assert Worker.objects.count() == 2


def test_an_unschedulable_deployment_records_which_filter_refused_which_node(
    version: ModelVersion,
) -> None:
    make_node("big", gpus=2)
    make_node("lost-one", gpus=8, state=NodeState.LOST)
    make_node("cordoned-one", gpus=8, state=NodeState.CORDONED)
    deployment = Deployment.objects.create(
        model_version=version, name="d", replicas=1, gpus_per_replica=4
    )
    report = scheduler.schedule()
    deployment.refresh_from_db()
    assert deployment.unschedulable_reason == report.unschedulable["d"]
    reason = deployment.unschedulable_reason
    assert reason.startswith("0 of 1 replicas placed; replica 1 (4 x 1.8 GiB) fits on no node:")
    assert "big: has 2 devices; a replica needs 4 on one node" in reason
    assert "lost-one: is lost" in reason
    assert "cordoned-one: is cordoned" in reason
    # Fixing the cause clears the reason.
    make_node("bigger", gpus=4)
    scheduler.schedule()
    deployment.refresh_from_db()
    assert deployment.unschedulable_reason == ""
    assert live_workers(deployment)[0].node.name == "bigger"  # type: ignore[union-attr]


def test_a_partly_placed_deployment_says_how_many_replicas_are_missing(
    version: ModelVersion,
) -> None:
    make_node("n1", gpus=1)
    deployment = Deployment.objects.create(model_version=version, name="d", replicas=2)
    scheduler.schedule()
    deployment.refresh_from_db()
    assert deployment.unschedulable_reason.startswith("1 of 2 replicas placed; replica 2")
    assert "n1: only 0 of 1 devices can take 4.0 GiB (needs 1): 1 in use" in (
        deployment.unschedulable_reason
    )


def test_the_label_selector_limits_placement(version: ModelVersion) -> None:
    make_node("a", labels={"zone": "a"})
    make_node("b", labels={"zone": "b"})
    deployment = Deployment.objects.create(
        model_version=version, name="d", replicas=2, label_selector={"zone": "b"}
    )
    scheduler.schedule()
    assert {w.node.name for w in live_workers(deployment)} == {"b"}  # type: ignore[union-attr]


def test_scaling_down_drains_the_not_yet_ready_workers_first(version: ModelVersion) -> None:
    make_node("n1", gpus=3)
    deployment = Deployment.objects.create(model_version=version, name="d", replicas=3)
    scheduler.schedule()
    first, second, third = live_workers(deployment)
    states.transition(first, WorkerState.STARTING)
    states.transition(first, WorkerState.READY)
    Deployment.objects.filter(pk=deployment.pk).update(replicas=1)
    report = scheduler.schedule()
    assert sorted(report.drained) == sorted([second.pk, third.pk])
    assert live_workers(deployment) == [first]
    assert Worker.objects.get(pk=second.pk).desired_state == DesiredState.STOPPED


def test_stopping_a_deployment_drains_all_its_workers(version: ModelVersion) -> None:
    make_node("n1")
    deployment = Deployment.objects.create(model_version=version, name="d", replicas=2)
    scheduler.schedule()
    deployment.desired_state = DesiredState.STOPPED
    deployment.save()
    scheduler.schedule()
    assert live_workers(deployment) == []
    assert set(deployment.workers.values_list("desired_state", flat=True)) == {"stopped"}


def test_workers_of_a_lost_node_are_stopped_and_replaced_on_another(
    version: ModelVersion, settings: object
) -> None:
    settings.NODE_HEARTBEAT_TIMEOUT_SECONDS = 30  # type: ignore[attr-defined]
    gone = make_node("gone")
    deployment = Deployment.objects.create(model_version=version, name="d", replicas=1)
    scheduler.schedule()
    (old,) = live_workers(deployment)
    assert old.node == gone
    states.transition(old, WorkerState.STARTING)
    states.transition(old, WorkerState.READY)
    make_node("spare")
    Node.objects.filter(pk=gone.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert mark_lost_nodes() == ["gone"]
    old.refresh_from_db()
    assert old.state == WorkerState.STOPPED
    assert "node gone was lost" in old.state_reason
    assert WorkerEvent.objects.filter(worker=old, to_state="stopped", source="scheduler").exists()
    (new,) = live_workers(deployment)
    assert new.node.name == "spare"  # type: ignore[union-attr]


def test_a_draining_node_hands_its_workers_over(version: ModelVersion) -> None:
    leaving = make_node("leaving")
    deployment = Deployment.objects.create(model_version=version, name="d", replicas=1)
    scheduler.schedule()
    (old,) = live_workers(deployment)
    make_node("staying")
    leaving.state = NodeState.DRAINING
    leaving.save()
    scheduler.schedule()
    old.refresh_from_db()
    assert old.desired_state == DesiredState.STOPPED  # its agent stops it
    (new,) = live_workers(deployment)
    assert new.node.name == "staying"  # type: ignore[union-attr]


def test_a_busy_gpu_is_not_offered_to_the_next_deployment(version: ModelVersion) -> None:
    make_node("n1", gpus=1)
    Deployment.objects.create(model_version=version, name="first", replicas=1)
    second = Deployment.objects.create(model_version=version, name="second", replicas=1)
    scheduler.schedule()
    second.refresh_from_db()
    assert "1 in use by other workers" in second.unschedulable_reason


def test_a_tensor_parallel_replica_takes_both_gpus_and_a_third_deployment_is_refused(
    version: ModelVersion,
) -> None:
    """Issue 7's scene with simulated GPUs: one node, two GPUs, a TP=2 replica, then TP=1."""
    node = make_node("dual", gpus=2)
    tp = Deployment.objects.create(
        model_version=version, name="tp2", replicas=1, gpus_per_replica=2
    )
    scheduler.schedule()
    (worker,) = live_workers(tp)
    assert worker.node == node
    assert sorted(worker.gpus.values_list("uuid", flat=True)) == ["GPU-dual-0", "GPU-dual-1"]

    single = Deployment.objects.create(model_version=version, name="tp1", replicas=1)
    scheduler.schedule()
    single.refresh_from_db()
    assert live_workers(single) == []
    assert "dual" in single.unschedulable_reason
    assert "2 in use by other workers" in single.unschedulable_reason
