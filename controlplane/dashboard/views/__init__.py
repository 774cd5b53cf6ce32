"""The dashboard's views, one module per area; `controlplane/dashboard/urls.py` maps them."""
