"""stemdaq api package."""
