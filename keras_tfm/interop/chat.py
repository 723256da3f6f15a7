"""Chat templates rendered as `transformers` renders them.

A checkpoint's chat template is Jinja code from its author, so it runs in
`jinja2`'s `ImmutableSandboxedEnvironment` with the settings and helpers of
`transformers.utils.chat_template_utils`: `trim_blocks`, `lstrip_blocks`,
the `loopcontrols` extension, a `tojson` filter that keeps non-ASCII text,
`raise_exception`, `strftime_now`, `dict` and a `namespace` that refuses
underscored names.
"""

import datetime
import functools
import json

from keras_tfm.extras import require

# jinja2 releases before 3.1.6 have known sandbox escapes.
MINIMUM_JINJA = (3, 1, 6)


def render(template, messages, add_generation_prompt=True, **variables):
    """The text of `messages` rendered with the Jinja chat `template`.

    Args:
        template: The chat template's source.
        messages: A list of dicts, each with `"role"` and `"content"`.
        add_generation_prompt: Passed to the template, which then ends with
            the start of the assistant's turn.
        **variables: More variables the template reads (`bos_token`, ...).

    Returns:
        The rendered prompt.
    """
    check_messages(messages)
    messages = [
        {key: value for key, value in message.items() if value is not None}
        for message in messages
    ]
    # transformers passes `tools` and `documents` always (None when not
    # given), and some templates test them with `is not none`.
    variables = {"tools": None, "documents": None, **variables}
    return compile_template(template).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        **variables,
    )


def check_messages(messages):
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(
            "`messages` must be a non-empty list of dicts with 'role' and "
            f"'content'. Received: messages={messages!r}"
        )
    for index, message in enumerate(messages):
        if not (isinstance(message, dict) and "role" in message):
            raise ValueError(
                "Each message must be a dict with 'role' and 'content'. "
                f"Received message {index}: {message!r}"
            )


@functools.lru_cache(maxsize=16)
def compile_template(template):
    """The compiled template, in transformers' sandboxed environment."""
    jinja2 = require("jinja2", "text", "Chat templates")
    require("jinja2.ext", "text", "Chat templates")
    sandbox = require("jinja2.sandbox", "text", "Chat templates")
    version = tuple(int(part) for part in jinja2.__version__.split(".")[:3])
    if version < MINIMUM_JINJA:
        raise ImportError(
            f"Chat templates need jinja2>=3.1.6 (older releases have known "
            f"sandbox escapes); found {jinja2.__version__}: "
            "pip install 'keras_tfm[text]'"
        )
    environment = sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = _tojson
    environment.globals.update(
        raise_exception=functools.partial(_raise, jinja2),
        strftime_now=_strftime_now,
        dict=_TemplateDict(),
        namespace=_namespace_class(jinja2),
    )
    return environment.from_string(template)


def _raise(jinja2, message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, **options):
    # Jinja's own `tojson` escapes HTML characters, which templates don't
    # want; `indent`, `separators` and `sort_keys` are json.dumps's.
    return json.dumps(value, ensure_ascii=ensure_ascii, **options)


def _strftime_now(format):
    return datetime.datetime.now().strftime(format)


class _TemplateDict:
    """`dict(...)` for templates, without the class's other attributes."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


@functools.cache
def _namespace_class(jinja2):
    """jinja2's `Namespace`, refusing underscored names (which would reach
    Python's internals)."""

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attributes = dict(*args, **kwargs)
            for name in attributes:
                TemplateNamespace.check_name(name)
            jinja2.utils.Namespace.__init__(self, attributes)

        def __setitem__(self, name, value):
            TemplateNamespace.check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    "Chat templates cannot store underscored attributes on a "
                    f"namespace. Received: {name!r}"
                )

    return TemplateNamespace
