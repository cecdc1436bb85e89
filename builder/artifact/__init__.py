"""Stage 3, the artifact: ELF reading, platform policies, repair, audit, the deterministic zip and manifest.

Host-side and engine-free: it works on files (a stage folder, a zip), never on containers or recipes.

Stage artifact: knows nothing of Docker or the engine (a lint-imports contract).
"""
