"""Models, their versions and engines, and which tenant may use which model, with every rule
about one of them (controlplane/validation.py says how). Grants and a version's state change
through models_registry/services.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from controlplane.validation import FieldConstraintsMixin, check_string_map, has_changed
from models_registry import engine_args

model_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$",
    "Use letters, digits and . _ : / - (the name clients send as `model`).",
)


def price_field() -> models.DecimalField:
    return models.DecimalField(
        max_digits=14,
        decimal_places=6,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD per million tokens",
    )


class EngineRuntime(models.Model):
    """One installed inference engine: which vLLM, and the python that runs it."""

    class Engine(models.TextChoices):
        VLLM = "vllm", "vLLM"

    name = models.CharField(max_length=100, unique=True)
    engine = models.CharField(max_length=16, choices=Engine.choices, default=Engine.VLLM)
    version = models.CharField(max_length=50)
    python_path = models.CharField(
        max_length=500, help_text="Absolute path of the python executable that has the engine."
    )
    environment = models.JSONField(
        default=dict, blank=True, help_text="Extra environment variables for the engine."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.engine} {self.version})"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        check_string_map(errors, "environment", self.environment)
        if self.python_path and not self.python_path.startswith("/"):
            errors["python_path"] = "Must be an absolute path."
        if errors:
            raise ValidationError(errors)


class Task(models.TextChoices):
    CHAT = "chat", "Chat"
    COMPLETION = "completion", "Completion"
    EMBEDDING = "embedding", "Embedding"


class Model(models.Model):
    """What clients ask for by name; its versions are what actually runs."""

    name = models.CharField(max_length=200, unique=True, validators=[model_name_validator])
    task = models.CharField(max_length=16, choices=Task.choices, default=Task.CHAT)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(task__in=Task.values),
                name="model_task_valid",
                violation_error_message="Choose a task: chat, completion or embedding.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class VersionState(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class ModelVersion(FieldConstraintsMixin, models.Model):
    """What actually runs. Rules: a label unique per model, prices not negative, vLLM arguments
    from the allow-list (`engine_args.validate`), a speculative config that is an object, no
    move to another model."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="versions")
    label = models.CharField(max_length=100)
    weights_source = models.CharField(
        max_length=500, help_text="A local directory, or a hub id mirrored to the nodes."
    )
    weights_revision = models.CharField(max_length=100, blank=True)
    weights_size_bytes = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Size of the weights; the scheduler's memory estimate uses it.",
    )
    runtime = models.ForeignKey(EngineRuntime, on_delete=models.PROTECT, related_name="versions")
    dtype = models.CharField(
        max_length=16,
        choices=[(v, v) for v in ("auto", "float16", "bfloat16", "float32")],
        default="auto",
    )
    quantization = models.CharField(
        max_length=32,
        blank=True,
        choices=[("", "none")] + [(v, v) for v in ("awq", "gptq", "fp8", "bitsandbytes", "gguf")],
    )
    max_model_len = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    enable_prefix_caching = models.BooleanField(default=True)
    speculative_config = models.JSONField(null=True, blank=True)
    kv_cache_bytes = models.PositiveBigIntegerField(
        default=1 << 30, help_text="KV-cache budget per replica, part of the memory estimate."
    )
    extra_args = models.JSONField(
        default=dict, blank=True, help_text="Further vLLM arguments, from an allow-list."
    )
    price_input_per_million = price_field()
    price_cached_input_per_million = price_field()
    price_output_per_million = price_field()
    state = models.CharField(
        max_length=16, choices=VersionState.choices, default=VersionState.DRAFT
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model__name", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "label"],
                name="version_label_unique_per_model",
                violation_error_message="This model already has a version with this label.",
            ),
            models.CheckConstraint(
                condition=Q(price_input_per_million__gte=0)
                & Q(price_cached_input_per_million__gte=0)
                & Q(price_output_per_million__gte=0),
                name="version_prices_not_negative",
                violation_error_message="Prices cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(state__in=VersionState.values),
                name="version_state_valid",
                violation_error_message="Choose a state: draft, active or retired.",
            ),
        ]

    constraint_fields = {"version_label_unique_per_model": "label"}

    def __str__(self) -> str:
        return f"{self.model.name}@{self.label}"

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        problems = engine_args.validate(self.extra_args)
        if problems:
            errors["extra_args"] = [f"{k}: {v}" for k, v in problems.items()]
        if self.speculative_config is not None and not isinstance(self.speculative_config, dict):
            errors["speculative_config"] = "Expected an object (vLLM's --speculative-config)."
        if self.model_id is not None and not self._state.adding and has_changed(self, "model"):
            errors["model"] = "A version cannot move to another model: create a new version."
        if errors:
            raise ValidationError(errors)

    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> Decimal:
        """Cost in USD at this version's current prices (the formula: models_registry.pricing)."""
        from models_registry import pricing

        prices = pricing.Prices(
            self.price_input_per_million,
            self.price_cached_input_per_million,
            self.price_output_per_million,
        )
        return pricing.cost(prices, prompt_tokens, cached_tokens, completion_tokens)


class ModelGrant(FieldConstraintsMixin, models.Model):
    """A tenant may use a model. Granted and ungranted through models_registry/services.py."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="grants")
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="grants")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant__slug", "model__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "model"],
                name="grant_unique_per_tenant_model",
                violation_error_message="This tenant is already granted this model.",
            ),
        ]

    constraint_fields = {"grant_unique_per_tenant_model": "model"}

    def __str__(self) -> str:
        return f"{self.tenant} → {self.model}"
