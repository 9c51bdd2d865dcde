"""Donated compute: the job queue and the worker (diffusers generation, peft training)."""
