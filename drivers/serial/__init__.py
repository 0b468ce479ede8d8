"""Serial oximeters: Masimo "ASCII 1" lines (``masimo``), Contec CMS50D+ packets (``contec``), port
settings per device kind (``ports``) and the pyserial transport (``transport``)."""
