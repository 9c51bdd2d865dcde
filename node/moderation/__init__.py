"""Moderation: takedown notices and decisions, takedown lists, enforcement, reports."""
