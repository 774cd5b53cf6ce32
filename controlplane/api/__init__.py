"""The REST provisioning API's shared kernel: base viewsets, permissions, serializer fields,
filters, pagination, the exception handler, and the one router (urls.py)."""
