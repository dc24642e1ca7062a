from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_delivery_error_detail_claim"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookendpoint",
            name="failures",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="webhookendpoint",
            name="open_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
