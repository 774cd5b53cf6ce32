"""The platform team's browser dashboard: server-rendered pages and htmx fragments. It holds no
rules of its own: forms and views call the domain apps' models and services."""
