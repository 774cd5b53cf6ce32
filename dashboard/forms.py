"""The dashboard's forms: every business rule a form checks mirrors a model constraint, so a
bad value is a field error beside its field, never an IntegrityError (a 500).

The REST API's serializers check the same rules; the list is in this module's docstrings so
the two can be unified later.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from controlplane.validation import string_map_problem
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion, VersionState
from nodes.models import Deployment, DesiredState
from tenants.models import ApiKey, Quota, Tenant


class TenantForm(forms.ModelForm):
    """Slug format and uniqueness come from the model's validators."""

    class Meta:
        model = Tenant
        fields = ["slug", "name", "priority_class", "active"]


class TenantSettingsForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ["name", "priority_class", "active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Its own ids: the key form on the tenant's page has a "name" field too.
        kwargs.setdefault("auto_id", "id_settings_%s")
        super().__init__(*args, **kwargs)


class ApiKeyForm(forms.Form):
    """Rules: a name unique among the tenant's unrevoked keys (the partial unique constraint),
    models narrowed to those the tenant is granted, an expiry in the future."""

    name = forms.CharField(max_length=200)
    expires_at = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Leave empty for a key that does not expire.",
    )
    allowed_models = forms.ModelMultipleChoiceField(
        queryset=Model.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means every model the tenant is granted.",
    )

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        self.fields["allowed_models"].queryset = granted_models(tenant)  # type: ignore[attr-defined]

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if ApiKey.objects.filter(tenant=self.tenant, name=name, revoked_at__isnull=True).exists():
            raise forms.ValidationError("This tenant already has an active key with this name.")
        return name

    def clean_expires_at(self) -> Any:
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at


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


class QuotaForm(forms.ModelForm):
    """Rules: one quota per scope (the four partial unique constraints), a model scope only for
    a model the tenant is granted, a key scope only for the tenant's own unrevoked keys,
    limits not negative (the model's validators and check constraint), at least one limit."""

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
        # Every model, so that picking an ungranted one is a clear error, not a missing choice.
        self.fields["model"].queryset = Model.objects.order_by("name")  # type: ignore[attr-defined]
        self.fields["model"].empty_label = "every model"  # type: ignore[attr-defined]
        self.fields["api_key"].queryset = ApiKey.objects.filter(  # type: ignore[attr-defined]
            tenant=tenant, revoked_at__isnull=True
        )
        self.fields["api_key"].empty_label = "every key"  # type: ignore[attr-defined]
        for name in Quota.LIMIT_FIELDS:
            self.fields[name].widget.attrs.update({"placeholder": "no limit", "min": "0"})

    def clean_model(self) -> Model | None:
        model: Model | None = self.cleaned_data.get("model")
        if (
            model is not None
            and not ModelGrant.objects.filter(tenant=self.tenant, model=model).exists()
        ):
            raise forms.ValidationError(
                f"{self.tenant.slug} is not granted {model.name}; grant the model first."
            )
        return model

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors and all(cleaned.get(name) is None for name in Quota.LIMIT_FIELDS):
            raise forms.ValidationError("Set at least one limit (empty fields mean no limit).")
        same_scope = Quota.objects.filter(
            tenant=self.tenant, api_key=cleaned.get("api_key"), model=cleaned.get("model")
        ).exclude(pk=self.instance.pk)
        if "api_key" not in self.errors and "model" not in self.errors and same_scope.exists():
            raise forms.ValidationError("A quota for this scope already exists; edit that one.")
        return cleaned


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


class ModelForm(forms.ModelForm):
    class Meta:
        model = Model
        fields = ["name", "task", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class RuntimeForm(forms.ModelForm):
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


class ModelVersionForm(forms.ModelForm):
    """Rules: a label unique per model, vLLM arguments from the allow-list
    (`models_registry.engine_args.validate`, run by `ModelVersion.clean`), prices not negative,
    a speculative config that is an object."""

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

    def clean_label(self) -> str:
        label: str = self.cleaned_data["label"]
        if (
            ModelVersion.objects.filter(model=self.model_obj, label=label)
            .exclude(pk=self.instance.pk)
            .exists()
        ):
            raise forms.ValidationError(f"{self.model_obj.name} already has a version {label}.")
        return label


class VersionStateForm(forms.Form):
    state = forms.ChoiceField(choices=VersionState.choices)


def _check_label_selector(value: Any) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if string_map_problem(value):
        raise forms.ValidationError('Expected an object of label names to values: {"zone": "a"}.')
    return value


class DeploymentForm(forms.ModelForm):
    """Rules: the model's validators (replicas ≤ 256, 1-16 GPUs per replica, weight ≤ 10000),
    a label selector of strings, a version that is not retired."""

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

    def clean_label_selector(self) -> dict[str, str]:
        return _check_label_selector(self.cleaned_data.get("label_selector"))


class DeploymentScaleForm(forms.ModelForm):
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
