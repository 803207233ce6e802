"""stemdaq receiver package."""
