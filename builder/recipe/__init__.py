"""Stage 1, the recipe: YAML in, a checked frozen `Recipe` out, and the sources it names.

Knows nothing of Docker, images or zips: everything here runs on the host with files and HTTP.
"""
