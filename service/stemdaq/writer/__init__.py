"""stemdaq writer package."""
