"""Interaction policies, offers and contact rules (built on crm's events)."""
