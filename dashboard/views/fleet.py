"""Models and their versions, deployments, nodes and workers: the platform team's fleet.

Just over 400 lines: thin views (the rules are on the models and in nodes.services), grouped by
the pages of the Fleet section; split it by page when it grows further.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.db.models.deletion import ProtectedError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import logs
from dashboard.access import (
    actor,
    is_partial,
    member_view,
    origin,
    own_tenant_id,
    platform_admin_view,
    respond,
)
from dashboard.forms import (
    DeploymentForm,
    DeploymentScaleForm,
    ModelForm,
    ModelVersionForm,
    RuntimeForm,
    VersionStateForm,
)
from dashboard.views.tenants import redirect_after_save
from models_registry import services as registry
from models_registry.models import EngineRuntime, Model, ModelVersion
from nodes import services
from nodes.models import (
    ACTIVE_WORKER_STATES,
    Deployment,
    DesiredState,
    Gpu,
    Node,
    Worker,
    WorkerState,
)

PAGE_SIZE = 50


# --- models and versions -----------------------------------------------------------------


def visible_models(request: HttpRequest) -> QuerySet[Model]:
    """Platform admins see every model; a tenant's members the models it is granted."""
    who = actor(request)
    models = Model.objects.all()
    if not who.is_platform_admin:
        models = models.filter(grants__tenant_id=own_tenant_id(who))
    return models


def models_context(request: HttpRequest, **overrides: Any) -> dict[str, Any]:
    models = visible_models(request).annotate(
        version_count=Count("versions", distinct=True),
        active_versions=Count("versions", filter=Q(versions__state="active"), distinct=True),
        tenant_count=Count("grants", distinct=True),
    )
    page = Paginator(models.order_by("name"), PAGE_SIZE).get_page(request.GET.get("page"))
    is_admin = actor(request).is_platform_admin
    context: dict[str, Any] = {
        "page": page,
        "is_platform_admin": is_admin,
        "model_form": ModelForm() if is_admin else None,
        "runtime_form": RuntimeForm() if is_admin else None,
        "runtimes": list(EngineRuntime.objects.all()) if is_admin else [],
    }
    context.update(overrides)
    return context


@require_http_methods(["GET", "POST"])
@member_view
def model_list(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return model_create(request)
    return respond(
        request, "dashboard/models.html", "htmx/model_results.html", models_context(request)
    )


@platform_admin_view
def model_create(request: HttpRequest) -> HttpResponse:
    form = ModelForm(request.POST)
    if not form.is_valid():
        context = models_context(request, model_form=form)
        return respond(request, "dashboard/models.html", "htmx/model_form.html", context, 422)
    with transaction.atomic():
        model = form.save()
        origin(request).created(model)
    return redirect_after_save(request, reverse("dashboard:model", args=[model.pk]))


@require_POST
@platform_admin_view
def runtime_create(request: HttpRequest) -> HttpResponse:
    form = RuntimeForm(request.POST)
    if not form.is_valid():
        context = models_context(request, runtime_form=form)
        return respond(request, "dashboard/models.html", "htmx/runtime_form.html", context, 422)
    with transaction.atomic():
        runtime = form.save()
        origin(request).created(runtime)
    return redirect_after_save(request, reverse("dashboard:models"))


def model_context(request: HttpRequest, model: Model, **overrides: Any) -> dict[str, Any]:
    is_admin = actor(request).is_platform_admin
    versions = list(
        ModelVersion.objects.filter(model=model)
        .select_related("runtime")
        .annotate(deployment_count=Count("deployments"))
    )
    deployments = list(
        Deployment.objects.filter(model_version__model=model)
        .select_related("model_version")
        .annotate(**worker_counts())
    )
    context: dict[str, Any] = {
        "model": model,
        "versions": versions,
        "deployments": with_traffic_share(deployments) if is_admin else [],
        "is_platform_admin": is_admin,
        "version_form": ModelVersionForm(model=model) if is_admin else None,
        "state_form": VersionStateForm(),
    }
    context.update(overrides)
    return context


@require_GET
@member_view
def model_detail(request: HttpRequest, model_id: int) -> HttpResponse:
    model = get_object_or_404(visible_models(request), pk=model_id)
    return render(request, "dashboard/model.html", model_context(request, model))


@require_POST
@platform_admin_view
def version_create(request: HttpRequest, model_id: int) -> HttpResponse:
    model = get_object_or_404(Model, pk=model_id)
    form = ModelVersionForm(request.POST, model=model)
    if not form.is_valid():
        context = model_context(request, model, version_form=form)
        return respond(request, "dashboard/model.html", "htmx/version_form.html", context, 422)
    registry.save_version(form.save(commit=False), origin=origin(request))
    return redirect_after_save(request, reverse("dashboard:model", args=[model.pk]))


@require_POST
@platform_admin_view
def version_state(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_object_or_404(ModelVersion.objects.select_related("model"), pk=version_id)
    form = VersionStateForm(request.POST)
    if form.is_valid() and form.cleaned_data["state"] != version.state:
        registry.set_version_state(version, form.cleaned_data["state"], origin=origin(request))
    return redirect_after_save(request, reverse("dashboard:model", args=[version.model_id]))


# --- deployments -------------------------------------------------------------------------


def worker_counts() -> dict[str, Any]:
    return {
        "workers_total": Count("workers", filter=~Q(workers__state=WorkerState.STOPPED)),
        "workers_ready": Count("workers", filter=Q(workers__state=WorkerState.READY)),
        "workers_troubled": Count(
            "workers",
            filter=Q(workers__state__in=[WorkerState.FAILED, WorkerState.CRASH_LOOPING]),
        ),
    }


def with_traffic_share(deployments: list[Deployment]) -> list[Deployment]:
    """Each running deployment's share of its model's traffic (weights are relative)."""
    model_ids = {d.model_version.model_id for d in deployments}
    totals = dict(
        Deployment.objects.filter(
            desired_state=DesiredState.RUNNING, model_version__model_id__in=model_ids
        )
        .values_list("model_version__model_id")
        .annotate(total=Sum("traffic_weight"))
        .values_list("model_version__model_id", "total")
    )
    for deployment in deployments:
        total = totals.get(deployment.model_version.model_id) or 0
        running = deployment.desired_state == DesiredState.RUNNING
        deployment.traffic_share = (  # type: ignore[attr-defined]
            round(100 * deployment.traffic_weight / total) if running and total else 0
        )
    return deployments


def deployments_context(request: HttpRequest, **overrides: Any) -> dict[str, Any]:
    deployments = (
        Deployment.objects.select_related("model_version__model")
        .annotate(**worker_counts())
        .order_by("name")
    )
    page = Paginator(deployments, PAGE_SIZE).get_page(request.GET.get("page"))
    context: dict[str, Any] = {
        "page": page,
        "deployments": with_traffic_share(list(page.object_list)),
        "form": DeploymentForm(),
    }
    context.update(overrides)
    return context


@require_http_methods(["GET", "POST"])
@platform_admin_view
def deployment_list(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return deployment_create(request)
    return respond(
        request,
        "dashboard/deployments.html",
        "htmx/deployment_results.html",
        deployments_context(request),
    )


@platform_admin_view
def deployment_create(request: HttpRequest) -> HttpResponse:
    form = DeploymentForm(request.POST)
    if not form.is_valid():
        context = deployments_context(request, form=form)
        return respond(
            request, "dashboard/deployments.html", "htmx/deployment_form.html", context, 422
        )
    with transaction.atomic():
        deployment = form.save()
        origin(request).created(deployment)
    if not is_partial(request):
        return redirect(reverse("dashboard:deployments"))
    return render(request, "htmx/deployment_results.html", deployments_context(request))


@require_POST
@platform_admin_view
def deployment_update(request: HttpRequest, deployment_id: int) -> HttpResponse:
    """Scale, reweigh, start or stop: the scheduler and the agents move toward it."""
    deployment = get_object_or_404(Deployment, pk=deployment_id)
    form = DeploymentScaleForm(request.POST, instance=deployment)
    if not form.is_valid():
        context: dict[str, Any] = {
            "deployment": annotated_deployment(deployment_id),
            "scale_form": form,
        }
        return respond(
            request, "dashboard/deployment_edit.html", "htmx/deployment_row.html", context, 422
        )
    services.scale_deployment(
        deployment,
        **{name: form.cleaned_data[name] for name in services.SCALE_FIELDS},
        origin=origin(request),
    )
    if not is_partial(request):
        return redirect(reverse("dashboard:deployments"))
    saved = {"deployment": annotated_deployment(deployment_id), "saved": True}
    return render(request, "htmx/deployment_row.html", saved)


def annotated_deployment(deployment_id: int) -> Deployment:
    deployment = (
        Deployment.objects.select_related("model_version__model")
        .annotate(**worker_counts())
        .get(pk=deployment_id)
    )
    return with_traffic_share([deployment])[0]


@require_POST
@platform_admin_view
def deployment_delete(request: HttpRequest, deployment_id: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment, pk=deployment_id)
    try:
        with transaction.atomic():
            origin(request).deleted(deployment)
            deployment.delete()
    except ProtectedError:
        # Usage records keep their worker as NULL, so nothing should protect it; say so if it does.
        raise PermissionDenied(
            "This deployment is still referenced and cannot be deleted."
        ) from None
    if not is_partial(request):
        return redirect(reverse("dashboard:deployments"))
    return render(request, "htmx/deployment_results.html", deployments_context(request))


# --- nodes and workers -------------------------------------------------------------------


def nodes_with_fleet(nodes: QuerySet[Node]) -> QuerySet[Node]:
    """A node with its GPUs (and who holds each) and its workers, in a fixed number of queries."""
    holders = Worker.objects.filter(state__in=ACTIVE_WORKER_STATES).select_related("deployment")
    workers = (
        Worker.objects.exclude(state=WorkerState.STOPPED)
        .select_related("deployment__model_version__model")
        .prefetch_related(Prefetch("gpus", queryset=Gpu.objects.order_by("index")))
        .order_by("deployment__name", "id")
    )
    return nodes.prefetch_related(
        Prefetch(
            "gpus",
            queryset=Gpu.objects.order_by("index").prefetch_related(
                Prefetch("workers", queryset=holders, to_attr="holders")
            ),
        ),
        Prefetch("workers", queryset=workers, to_attr="live_workers"),
    )


@require_GET
@platform_admin_view
def node_list(request: HttpRequest) -> HttpResponse:
    nodes = nodes_with_fleet(Node.objects.order_by("name"))
    page = Paginator(nodes, PAGE_SIZE).get_page(request.GET.get("page"))
    return respond(request, "dashboard/nodes.html", "htmx/node_cards.html", {"page": page})


@require_GET
@platform_admin_view
def node_detail(request: HttpRequest, name: str) -> HttpResponse:
    node = get_object_or_404(nodes_with_fleet(Node.objects.all()), name=name)
    return respond(request, "dashboard/node.html", "htmx/node_live.html", {"node": node})


NODE_ACTIONS = {
    "cordon": services.cordon_node,
    "drain": services.drain_node,
    "uncordon": services.uncordon_node,
}


@require_POST
@platform_admin_view
def node_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    node = get_object_or_404(Node, name=name)
    operation = NODE_ACTIONS.get(action)
    if operation is None:
        raise Http404(f"Unknown node action {action!r}.")
    try:
        operation(node, f"{action} from the dashboard", origin=origin(request))
    except services.Refused as exc:
        if not is_partial(request):
            return HttpResponse(str(exc), status=409)
        return node_answer(request, node.name, refusal=str(exc))
    return node_answer(request, node.name)


def node_answer(request: HttpRequest, name: str, refusal: str = "") -> HttpResponse:
    """After an action: the refreshed live block for htmx, the node page otherwise. A refused
    action (someone else drained the worker meanwhile) is said in words above the block, not
    a silent 409 that htmx would not show."""
    if not is_partial(request):
        return redirect(reverse("dashboard:node", args=[name]))
    node = get_object_or_404(nodes_with_fleet(Node.objects.all()), name=name)
    return render(request, "htmx/node_live.html", {"node": node, "refusal": refusal})


@require_GET
@platform_admin_view
def worker_log(request: HttpRequest, worker_id: int) -> HttpResponse:
    worker = get_object_or_404(Worker.objects.select_related("node", "deployment"), pk=worker_id)
    tail = logs.worker_log_tail(worker)
    lines = logs.redact(worker, tail.lines)
    context = {"worker": worker, "tail": tail, "lines": lines}
    return respond(request, "dashboard/worker_log.html", "htmx/worker_log.html", context)


WORKER_ACTIONS = {"restart": services.restart_worker, "drain": services.drain_worker}


@require_POST
@platform_admin_view
def worker_action(request: HttpRequest, worker_id: int, action: str) -> HttpResponse:
    """restart: the node agent replaces the engine with a fresh one; drain: the worker is no
    longer wanted, so its agent drains and stops it (nodes.services says how)."""
    worker = get_object_or_404(Worker.objects.select_related("node", "deployment"), pk=worker_id)
    operation = WORKER_ACTIONS.get(action)
    if operation is None:
        raise Http404(f"Unknown worker action {action!r}.")
    try:
        operation(worker, origin=origin(request))
    except services.Refused as exc:
        if worker.node is None or not is_partial(request):
            return HttpResponse(str(exc), status=409)
        return node_answer(request, worker.node.name, refusal=str(exc))
    if worker.node is None:
        return redirect_after_save(request, reverse("dashboard:deployments"))
    return node_answer(request, worker.node.name)
