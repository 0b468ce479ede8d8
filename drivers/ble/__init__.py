"""Bluetooth LE: Bluetooth SIG health-profile parsers (``gatt``) and the bleak transport (``transport``)."""
