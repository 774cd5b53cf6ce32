"""The dashboard's views, one module per area; `dashboard/urls.py` maps them."""
