from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0003_webhookendpoint_breaker"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookendpoint",
            name="slow",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="webhookendpoint",
            name="last_attempt_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
