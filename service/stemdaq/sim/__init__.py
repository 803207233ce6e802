"""stemdaq sim package."""
