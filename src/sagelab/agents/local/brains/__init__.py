"""Brain implementations, one per module; build them with ``brain.create_brain``."""
