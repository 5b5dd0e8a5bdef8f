"""The issuer service (SPEC §4)."""
