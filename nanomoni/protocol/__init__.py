"""Pure protocol rules (SPEC §4–§5): no I/O, no HTTP, no store."""
