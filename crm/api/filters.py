"""The filters of the API's lists, declared once: the runtime check of the query
string (crm.api.base) and the OpenAPI schema both read these classes."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from crm.models import Account, Product
from crm.models.choices import AccountStatus, ProductCategory


class StrictFilterSet(django_filters.FilterSet):
    """A filter sent empty (``?status=``) is refused, not read as "no filter": the
    caller meant something, and the unfiltered list is not it."""

    def is_valid(self) -> bool:
        valid = super().is_valid()
        blank = [name for name in self.filters if name in self.data and not str(self.data[name]).strip()]
        for name in blank:
            self.form.add_error(name, "Give a value, or leave the parameter out.")
        return valid and not blank


def _yes(value: str) -> bool:
    return value == "true"


@extend_schema_field(OpenApiTypes.BOOL)
class TrueFalseFilter(django_filters.TypedChoiceFilter):
    """true or false, nothing else: django-filter's BooleanFilter reads any other
    word as "no filter" and would return every row."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[("true", "true"), ("false", "false")], coerce=_yes, **kwargs)


class AccountFilter(StrictFilterSet):
    # By id, not as a choice among all customers: an id the caller may not see
    # gives an empty list, exactly like one that does not exist.
    customer = django_filters.NumberFilter(field_name="customer_id", help_text="A customer's id.")
    status = django_filters.ChoiceFilter(choices=AccountStatus.choices)
    account_number = django_filters.CharFilter(help_text="The account number, exactly.")
    product__code = django_filters.CharFilter(help_text="The product's code, exactly.")

    class Meta:
        model = Account
        fields = ["customer", "status", "account_number", "product__code"]


class ProductFilter(StrictFilterSet):
    category = django_filters.ChoiceFilter(choices=ProductCategory.choices)
    active = TrueFalseFilter(help_text="true or false.")

    class Meta:
        model = Product
        fields = ["category", "active"]
