from __future__ import annotations

import django_filters

from nodes.models import Deployment, Gpu, Node, Worker


class NodeFilter(django_filters.FilterSet):
    class Meta:
        model = Node
        fields = ["name", "state", "address"]


class GpuFilter(django_filters.FilterSet):
    node_name = django_filters.CharFilter(field_name="node__name")

    class Meta:
        model = Gpu
        fields = ["node", "node_name", "uuid", "name"]


class DeploymentFilter(django_filters.FilterSet):
    model = django_filters.NumberFilter(field_name="model_version__model_id")
    model_name = django_filters.CharFilter(field_name="model_version__model__name")

    class Meta:
        model = Deployment
        fields = ["name", "model_version", "model", "model_name", "desired_state"]


class WorkerFilter(django_filters.FilterSet):
    class Meta:
        model = Worker
        fields = ["deployment", "node", "state", "desired_state"]
