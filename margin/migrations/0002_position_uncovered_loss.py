from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("margin", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="position",
            name="uncovered_loss",
            field=models.DecimalField(decimal_places=8, default=0, max_digits=30),
        ),
    ]
