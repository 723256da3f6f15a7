"""MkDocs hook: draw the figures with keras_tfm before each build."""

import os
import runpy

FIGURES = os.path.join(os.path.dirname(__file__), "figures.py")


def on_pre_build(config, **kwargs):
    generated = os.path.join(config["docs_dir"], "images", "generated")
    # `mkdocs serve` rebuilds when files change; drawing only missing figures
    # keeps the figures from triggering endless rebuilds (`make docs` starts
    # from an empty folder).
    if not os.path.isdir(generated) or not os.listdir(generated):
        runpy.run_path(FIGURES, run_name="__main__")
