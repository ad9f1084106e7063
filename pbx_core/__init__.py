"""Wafer PBX: a boot-and-forget office PBX appliance."""
