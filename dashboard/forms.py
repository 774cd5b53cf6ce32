"""The dashboard's forms. They hold no rule: each model form is a `RulesForm`, which runs the
model's full_clean (its constraints, validators and clean(), tenants/models.py and the others)
once the view has set what the form does not show, such as the tenant. A bad value is then an
error beside its field, worded as on the REST API and in the admin, never an IntegrityError.

What is left here is presentation: which choices a select offers, widgets, labels, ids.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from controlplane.validation import RulesFormMixin
from models_registry.models import EngineRuntime, Model, ModelVersion, VersionState
from nodes.models import Deployment, DesiredState
from tenants.models import ApiKey, Quota, Tenant


class RulesForm(RulesFormMixin, forms.ModelForm):
    """A ModelForm that runs every rule of its model, on fields it does not show as well."""


class TenantForm(RulesForm):
    class Meta:
        model = Tenant
        fields = ["slug", "name", "priority_class", "active"]


class TenantSettingsForm(RulesForm):
    class Meta:
        model = Tenant
        fields = ["name", "priority_class", "active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Its own ids: the key form on the tenant's page has a "name" field too.
        kwargs.setdefault("auto_id", "id_settings_%s")
        super().__init__(*args, **kwargs)


class ApiKeyForm(RulesForm):
    """A new key of `tenant`; its models are offered among those the tenant is granted."""

    class Meta:
        model = ApiKey
        fields = ["name", "expires_at", "allowed_models"]
        widgets = {
            "expires_at": forms.DateTimeInput(attrs={"type": "datetime-local"}),
            "allowed_models": forms.CheckboxSelectMultiple,
        }
        help_texts = {
            "expires_at": "Leave empty for a key that does not expire.",
            "allowed_models": "None ticked means every model the tenant is granted.",
        }

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        self.instance.tenant = tenant
        self.fields["allowed_models"].queryset = granted_models(tenant)  # type: ignore[attr-defined]


GRACE_CHOICES = [
    ("0", "Immediately"),
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    ("604800", "7 days"),
]


class RotateForm(forms.Form):
    grace = forms.TypedChoiceField(
        choices=GRACE_CHOICES, coerce=int, initial="86400", label="Old key keeps working"
    )

    def grace_period(self) -> timedelta:
        return timedelta(seconds=self.cleaned_data["grace"])


def granted_models(tenant: Tenant) -> Any:
    return Model.objects.filter(grants__tenant=tenant).order_by("name")


class QuotaForm(RulesForm):
    """A quota of `tenant`. The key is chosen among the tenant's unrevoked keys; every model is
    offered, so that picking an ungranted one is a clear error, not a missing choice."""

    class Meta:
        model = Quota
        fields = ["api_key", "model", *Quota.LIMIT_FIELDS]
        labels = {"api_key": "Key", "model": "Model", "concurrent_requests": "Concurrent"}

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        instance = kwargs.get("instance")
        if instance is not None and instance.pk:
            # Ids of its own: each quota's card can hold an edit form beside the create form.
            kwargs.setdefault("auto_id", f"id_q{instance.pk}_%s")
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        self.instance.tenant = tenant
        self.fields["model"].queryset = Model.objects.order_by("name")  # type: ignore[attr-defined]
        self.fields["model"].empty_label = "every model"  # type: ignore[attr-defined]
        self.fields["api_key"].queryset = ApiKey.objects.filter(  # type: ignore[attr-defined]
            tenant=tenant, revoked_at__isnull=True
        )
        self.fields["api_key"].empty_label = "every key"  # type: ignore[attr-defined]
        for name in Quota.LIMIT_FIELDS:
            self.fields[name].widget.attrs.update({"placeholder": "no limit", "min": "0"})


class GrantForm(forms.Form):
    model = forms.ModelChoiceField(queryset=Model.objects.none())

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        # Its own ids: the quota form on the same page has a "model" field too, and two
        # id_model elements would tie both labels to the first.
        kwargs.setdefault("auto_id", "id_grant_%s")
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        self.fields["model"].queryset = Model.objects.exclude(  # type: ignore[attr-defined]
            grants__tenant=tenant
        ).order_by("name")


class ModelForm(RulesForm):
    class Meta:
        model = Model
        fields = ["name", "task", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class RuntimeForm(RulesForm):
    class Meta:
        model = EngineRuntime
        fields = ["name", "engine", "version", "python_path", "environment"]
        widgets = {"environment": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Its own ids: the model form on the same page has a "name" field too.
        kwargs.setdefault("auto_id", "id_runtime_%s")
        super().__init__(*args, **kwargs)


class OptionalJSONField(forms.JSONField):
    """Empty stays empty: a cleared box means "not set", and None shows as a blank box."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


class ModelVersionForm(RulesForm):
    """A new version of `model` (set on the instance, so the label's uniqueness is checked)."""

    class Meta:
        model = ModelVersion
        fields = [
            "label",
            "weights_source",
            "weights_revision",
            "weights_size_bytes",
            "runtime",
            "dtype",
            "quantization",
            "max_model_len",
            "enable_prefix_caching",
            "kv_cache_bytes",
            "extra_args",
            "speculative_config",
            "price_input_per_million",
            "price_cached_input_per_million",
            "price_output_per_million",
            "state",
        ]
        field_classes = {"speculative_config": OptionalJSONField}
        labels = {
            "weights_size_bytes": "Weights size (bytes)",
            "kv_cache_bytes": "KV-cache bytes",
            "extra_args": "Further vLLM arguments",
            "price_input_per_million": "Input $/1M",
            "price_cached_input_per_million": "Cached input $/1M",
            "price_output_per_million": "Output $/1M",
        }
        widgets = {
            "extra_args": forms.Textarea(
                attrs={"rows": 3, "placeholder": '{"max-num-seqs": 64, "enforce-eager": true}'}
            ),
            "speculative_config": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args: Any, model: Model, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_obj = model
        self.instance.model = model
        self.fields["extra_args"].required = False
        self.fields["state"].initial = VersionState.DRAFT

    def clean_extra_args(self) -> Any:
        # An emptied textarea means "no further arguments", not JSON null.
        value = self.cleaned_data.get("extra_args")
        return {} if value in (None, "") else value


class VersionStateForm(forms.Form):
    state = forms.ChoiceField(choices=VersionState.choices)


class DeploymentForm(RulesForm):
    """A new deployment; retired versions are not offered (Deployment.clean refuses them)."""

    class Meta:
        model = Deployment
        fields = [
            "name",
            "model_version",
            "replicas",
            "gpus_per_replica",
            "placement_strategy",
            "label_selector",
            "traffic_weight",
        ]
        widgets = {"label_selector": forms.Textarea(attrs={"rows": 1, "placeholder": "{}"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_version"].queryset = (  # type: ignore[attr-defined]
            ModelVersion.objects.select_related("model").exclude(state=VersionState.RETIRED)
        )
        self.fields["label_selector"].required = False

    def clean_label_selector(self) -> Any:
        # An emptied box means "no labels required", not JSON null.
        value = self.cleaned_data.get("label_selector")
        return {} if value in (None, "") else value


class DeploymentScaleForm(RulesForm):
    class Meta:
        model = Deployment
        fields = ["replicas", "traffic_weight", "desired_state"]
        labels = {"traffic_weight": "Weight", "desired_state": "Desired"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["desired_state"].choices = DesiredState.choices  # type: ignore[attr-defined]


class UsageFilterForm(forms.Form):
    """Usage filters; tenant and model choices are narrowed to what the actor may see."""

    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    tenant = forms.ModelChoiceField(
        queryset=Tenant.objects.none(), required=False, empty_label="all tenants"
    )
    model = forms.ModelChoiceField(
        queryset=Model.objects.order_by("name"), required=False, empty_label="all models"
    )

    DEFAULT_DAYS = 7
    MAX_DAYS = 366

    def __init__(self, *args: Any, tenants: Any, models: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants  # type: ignore[attr-defined]
        self.fields["model"].queryset = models  # type: ignore[attr-defined]

    @classmethod
    def default_range(cls) -> dict[str, str]:
        today = timezone.now().date()
        return {"start": str(today - timedelta(days=cls.DEFAULT_DAYS - 1)), "end": str(today)}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        today = timezone.now().date()
        end: date = cleaned.get("end") or today
        start: date = cleaned.get("start") or end - timedelta(days=self.DEFAULT_DAYS - 1)
        if start > end:
            self.add_error("start", "The start must be on or before the end.")
        elif (end - start).days >= self.MAX_DAYS:
            self.add_error("start", f"Choose at most {self.MAX_DAYS} days.")
        cleaned["start"], cleaned["end"] = start, end
        return cleaned
