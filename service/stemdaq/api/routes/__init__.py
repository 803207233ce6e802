"""stemdaq api/routes package."""
