"""The docs: code that runs, a strict build, links and images that resolve,
and an API entry for every public name."""

import inspect
import os
import re
import runpy
import subprocess
import sys
import textwrap
from html.parser import HTMLParser

import keras
import pytest

import keras_tfm
from keras_tfm import (
    distribution,
    generation,
    interop,
    models,
    visualize,
)

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
DOCS = os.path.join(ROOT, "docs")
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)

PUBLIC_MODULES = {"models": models, "generation": generation}
PUBLIC_LAYERS = [
    getattr(keras_tfm, n) for n in keras_tfm.__all__ if n not in PUBLIC_MODULES
]
DOCUMENTED = (
    PUBLIC_LAYERS
    + [getattr(m, n) for m in PUBLIC_MODULES.values() for n in m.__all__]
    + [visualize.plot_attention, visualize.plot_positional_encoding]
    + [distribution.layout_map]
    + [getattr(interop, n) for n in interop.__all__]
)
# Keras's distribution API runs on the JAX backend only.
JAX_ONLY = {distribution.layout_map, os.path.join("guides", "distribution.md")}


def python_blocks(text):
    return [textwrap.dedent(block) for block in PYTHON_BLOCK.findall(text)]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda obj: obj.__name__)
def test_docstring_example_runs(obj, tmp_path, monkeypatch):
    if obj in JAX_ONLY and keras.backend.backend() != "jax":
        pytest.skip("keras.distribution runs on the JAX backend only")
    docstring = inspect.getdoc(obj)
    for section in ("Args:", "Returns:", "Example:"):
        assert section in docstring, f"{obj.__name__} lacks {section}"
    if inspect.isclass(obj):
        assert "Call arguments:" in docstring
    blocks = python_blocks(docstring)
    assert blocks, f"{obj.__name__} has no runnable example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, f"<{obj.__name__} example>", "exec"), {})


def markdown_pages():
    for directory, _, files in os.walk(DOCS):
        for name in sorted(files):
            if name.endswith(".md"):
                yield os.path.relpath(os.path.join(directory, name), DOCS)


@pytest.mark.parametrize("page", list(markdown_pages()))
def test_docs_code_blocks_run(page, tmp_path, monkeypatch):
    if page in JAX_ONLY and keras.backend.backend() != "jax":
        pytest.skip("keras.distribution runs on the JAX backend only")
    with open(os.path.join(DOCS, page), encoding="utf-8") as file:
        blocks = python_blocks(file.read())
    monkeypatch.chdir(tmp_path)
    for index, block in enumerate(blocks):
        exec(compile(block, f"<{page} block {index}>", "exec"), {})


@pytest.mark.slow
def test_figures_draw_on_this_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("FIGURES_DIR", str(tmp_path))
    runpy.run_path(
        os.path.join(DOCS, "_scripts", "figures.py"), run_name="__main__"
    )
    assert len(os.listdir(tmp_path)) == 10


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.references = []
        self.ids = set()

    def handle_starttag(self, tag, attributes):
        attributes = dict(attributes)
        if "id" in attributes:
            self.ids.add(attributes["id"])
        for name in ("href", "src"):
            if attributes.get(name):
                self.references.append(attributes[name])


def parse_site(site):
    pages = {}
    for directory, _, files in os.walk(site):
        for name in files:
            if name.endswith(".html"):
                path = os.path.join(directory, name)
                parser = _References()
                with open(path, encoding="utf-8") as file:
                    parser.feed(file.read())
                pages[path] = parser
    return pages


def broken_references(site, pages):
    broken = []
    for path, parser in pages.items():
        for reference in parser.references:
            if re.match(r"^(https?:|mailto:|data:|#|javascript:)", reference):
                continue
            target = reference.split("#")[0].split("?")[0]
            # Root-absolute links (the 404 page's) start at the site root.
            base = site if target.startswith("/") else os.path.dirname(path)
            resolved = os.path.normpath(os.path.join(base, target.lstrip("/")))
            if target.endswith("/") or os.path.isdir(resolved):
                resolved = os.path.join(resolved, "index.html")
            if not os.path.exists(resolved):
                broken.append(f"{os.path.relpath(path)} -> {reference}")
    return broken


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="the site is the same on every backend (built once, on the "
    "fastest suite's); test_figures_draw_on_this_backend draws its figures "
    "on each",
)
def test_site_builds_strictly_with_links_images_and_api(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pages = parse_site(str(site))
    assert not broken_references(str(site), pages)
    images = [
        r for p in pages.values() for r in p.references if r.endswith(".png")
    ]
    assert len(images) >= 7
    api_ids = set().union(
        *(p.ids for path, p in pages.items() if os.sep + "api" + os.sep in path)
    )
    for layer in PUBLIC_LAYERS:
        name = f"keras_tfm.{layer.__name__}"
        assert name in api_ids, f"no API entry for {name}"
    modules = {
        **PUBLIC_MODULES,
        "distribution": distribution,
        "interop": interop,
    }
    for module_name, module in modules.items():
        for name in module.__all__:
            name = f"keras_tfm.{module_name}.{name}"
            assert name in api_ids, f"no API entry for {name}"
