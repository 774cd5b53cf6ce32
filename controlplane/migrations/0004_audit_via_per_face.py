from django.db import migrations, models


def ui_to_dashboard(apps, schema_editor):
    # Before this change the admin and the dashboard both wrote "ui"; the old rows cannot be
    # told apart, and the dashboard wrote nearly all of them.
    apps.get_model("controlplane", "AuditEvent").objects.filter(via="ui").update(via="dashboard")


def dashboard_to_ui(apps, schema_editor):
    apps.get_model("controlplane", "AuditEvent").objects.filter(
        via__in=["dashboard", "admin"]
    ).update(via="ui")


class Migration(migrations.Migration):
    dependencies = [("controlplane", "0003_usage_sent_tokens")]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="via",
            field=models.CharField(
                choices=[
                    ("api", "REST API"),
                    ("dashboard", "Dashboard"),
                    ("admin", "Django admin"),
                    ("cli", "Command line"),
                    ("system", "System"),
                ],
                max_length=16,
            ),
        ),
        migrations.RunPython(ui_to_dashboard, dashboard_to_ui),
    ]
