"""Device-side byte encoders: what real devices put on the air or the wire.

``gatt_encoders`` builds Bluetooth SIG health characteristic values; ``serial_encoders`` builds Masimo
ASCII 1 lines and Contec CMS50D+ packets. They are written from the specifications independently of the
parsers in ``drivers`` (and import nothing from it), so a parser bug and an encoder bug cannot cancel out
in the round-trip tests.
"""
