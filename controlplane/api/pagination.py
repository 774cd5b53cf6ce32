"""The one pagination every list in the provisioning API uses."""

from __future__ import annotations

from rest_framework import pagination


class Pagination(pagination.LimitOffsetPagination):
    default_limit = 50
    max_limit = 500
