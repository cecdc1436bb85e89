"""Stage 4, shipping a built zip: Lambda's limits, `test` in a runtime container, publish, container images.

Starts from a zip and its manifest only; never from a recipe or a build.

Stage ship: works on finished zips and their manifests (test, limits, publish, images); must not build.
"""
