"""Rendering of results for people: text, figures, HTML."""
