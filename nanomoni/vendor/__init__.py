"""The vendor service (SPEC §5)."""
