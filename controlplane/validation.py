"""The shared machinery of the domain's rules; the rules themselves live on the models.

A rule about one object lives once, where NetBox puts it: a `Meta.constraints` entry with a
`violation_error_message` (the database enforces it, `full_clean` reports it), a field
validator, or the model's `clean()` when it reads other rows. Every write face runs the same
`full_clean`: the REST serializers through `ValidatedModelSerializer`, the dashboard's forms
through `RulesFormMixin`, the Django admin through its ModelForm, and the services in
tenants/services.py and models_registry/services.py before they save. What lives here:

- `string_map_problem`: the one check of "an object of string names to string values";
- `FieldConstraintsMixin`: a constraint's violation shown beside the field it is about (Django
  reports every constraint as a non-field error);
- `full_clean`: full_clean plus the rules on many-to-many values about to be set, which a
  model's clean() cannot see (they are written after the row);
- `RulesFormMixin`: a ModelForm (dashboard, admin) that runs them all, tenant included;
- `has_changed`: a rule that holds for a value when it is set, not forever after (an expiry in
  the future, a deployment's version not retired).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.db import models, router


def string_map_problem(value: object) -> str | None:
    """Why `value` is not an object of string names to string values (None if it is)."""
    if not isinstance(value, dict):
        return "Expected an object of string names to string values."
    bad = [str(k) for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        return f"Values must be strings; not so for: {', '.join(sorted(bad))}."
    return None


def check_string_map(errors: dict[str, Any], field: str, value: object) -> None:
    """Add `field`'s string-map problem to a clean()'s error dict, if it has one."""
    problem = string_map_problem(value)
    if problem:
        errors[field] = problem


class FieldConstraintsMixin:
    """Report a constraint's violation on the field named in `constraint_fields`
    ({constraint name: field}), so that the name clash of a key shows beside its name box and
    under `name` in a 400, not as a message about the whole form. Otherwise as Django's own
    `Model.validate_constraints`."""

    constraint_fields: ClassVar[Mapping[str, str]] = {}

    def validate_constraints(self, exclude: Collection[str] | None = None) -> None:
        assert isinstance(self, models.Model)
        exclude = set(exclude) if exclude is not None else None
        using = router.db_for_write(type(self), instance=self)
        errors: dict[str, Any] = {}
        for model_class, constraints in self.get_constraints():
            for constraint in constraints:
                try:
                    constraint.validate(model_class, self, exclude=exclude, using=using)
                except ValidationError as exc:
                    field = self.constraint_fields.get(constraint.name)
                    fields: tuple[str, ...] = tuple(getattr(constraint, "fields", ()))
                    if field is None and exc.code == "unique" and len(fields) == 1:
                        field = fields[0]
                    if field is None:
                        errors = exc.update_error_dict(errors)
                    else:
                        errors.setdefault(field, []).append(exc)
        if errors:
            raise ValidationError(errors)


def full_clean(
    instance: models.Model,
    *,
    many_to_many: Mapping[str, Iterable[Any]] | None = None,
    exclude: Iterable[str] | None = None,
) -> None:
    """Every rule of `instance`, including those on many-to-many values about to be set
    (the model's `clean_many_to_many(values)`), raised as one ValidationError."""
    errors: dict[str, Any] = {}
    try:
        instance.full_clean(exclude=exclude)
    except ValidationError as exc:
        errors = exc.update_error_dict(errors)
    check = getattr(instance, "clean_many_to_many", None)
    if many_to_many and check is not None:
        try:
            check(many_to_many)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
    if errors:
        raise ValidationError(errors)


def filled_later(instance: models.Model, written: Iterable[str]) -> list[str]:
    """Required fields a face does not write and that are still empty: the service fills them
    on save (a key's hash, a token's user). Left out of full_clean, and with them only the
    constraints that name them."""
    names = set(written)
    return [
        field.name
        for field in instance._meta.concrete_fields
        if field.name not in names
        and not field.blank
        and field.value_from_object(instance) in field.empty_values
    ]


class RulesFormMixin:
    """For a ModelForm: once the fields it shows are valid, run every rule of the instance,
    those on fields it does not show included. Django's ModelForm skips a constraint that names
    a field missing from the form, such as the tenant a dashboard view sets on the instance, and
    never sees many-to-many rules. Errors go beside their field, or above the form when the
    field is not on it."""

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]
        form: Any = self
        if form._errors:
            return
        instance = form.instance
        many = {
            field.name: form.cleaned_data[field.name]
            for field in instance._meta.many_to_many
            if field.name in form.cleaned_data
        }
        try:
            full_clean(instance, many_to_many=many, exclude=filled_later(instance, form.fields))
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, messages)


def has_changed(instance: models.Model, field: str) -> bool:
    """Whether `field` differs from the saved row (always, for an object not saved yet)."""
    if instance._state.adding or instance.pk is None:
        return True
    attname = instance._meta.get_field(field).attname  # type: ignore[union-attr]
    saved = type(instance)._default_manager.filter(pk=instance.pk).values_list(attname, flat=True)
    values = list(saved[:1])
    return not values or values[0] != getattr(instance, attname)
