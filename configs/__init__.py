"""Experiment configs (ml_collections); ``base.py`` holds every field with its meaning."""
