"""Pipelines: the diffusion-specific glue between data, networks, processes, the trainer and samplers."""
