"""WardWatch device drivers: pure protocol parsers (BLE GATT, serial) and thin transports."""
