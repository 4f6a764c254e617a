"""Image models that score images, shared by evaluation and a future curation stage: feature
extractors (``features.py``) and the CLIP score of an image against its prompt
(``clip_score.py``).

Nothing here imports ``synthset.evaluate`` or ``synthset.generators``: the stages use these
models; the models use no stage."""
