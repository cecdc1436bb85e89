"""Stage 2, the build: targets planned from recipes and the ordered actions run in a build container.

The only stage that ties the others together: it reads recipes, drives the engine, hands the
stage folder to `builder.artifact` and stores the result in `builder.cache`.

Stage pipeline: the only stage that runs builds; it may use every stage below it, and none of them may import it.
"""
