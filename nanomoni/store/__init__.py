"""Storage: one small interface per side, adapters selected by a --store URL."""
