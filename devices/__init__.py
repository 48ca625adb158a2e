"""Board profiles and device facts, imported as edgert.devices."""
