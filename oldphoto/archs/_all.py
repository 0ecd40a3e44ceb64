"""Imports every architecture module so that each registers itself. Add new files here."""
