from django.db import migrations

from market.defaults import load_default_instruments


def load(apps, schema_editor):
    load_default_instruments(apps.get_model("market", "Instrument"))


class Migration(migrations.Migration):
    dependencies = [("market", "0003_market_data")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
