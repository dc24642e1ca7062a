from django.contrib import admin

from .models import Instrument


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    list_display = ("symbol", "exchange", "tick_size", "lot_size", "max_leverage", "maintenance_margin_rate", "active")
    list_filter = ("exchange", "active")
    search_fields = ("symbol",)
