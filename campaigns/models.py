"""Outbound campaigns: segments, cells, control groups and attribution."""
