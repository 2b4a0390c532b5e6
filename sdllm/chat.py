"""Chat templates: a model's own Jinja template (from its GGUF metadata or tokenizer config,
carried in the tokenizer spec as "chat_template") turned into the prompt text it was trained on.

The template comes from a model file, so it is rendered in Jinja's immutable sandbox (no
attribute access to Python internals, no mutation of the messages): the environment Hugging
Face's `apply_chat_template` uses — trim_blocks, lstrip_blocks, loop controls, `tojson`,
`raise_exception`, `strftime_now` and a `{% generation %}` block that renders its body. And as
its cost is the template's to decide (nested loops, `indent(10**9)`, a macro calling itself),
it is compiled and rendered in a confined child (`sdllm.confined`): within RENDER_TIME_S,
RENDER_MEMORY more bytes and MAX_RENDERED_CHARS of text, else one line; every error of the
template's is one line too.
"""

import json
from datetime import datetime

from sdllm import confined
from sdllm.errors import SdllmError
from sdllm.tokenizer import token_text

RENDER_TIME_S = 5.0
RENDER_MEMORY = 1 << 30
MAX_RENDERED_CHARS = 1 << 20  # far more text than any context holds

ROLES = ("system", "user", "assistant")


def template_of(spec: dict) -> str:
    """The spec's chat template, or a one-line error saying the model has none."""
    template = spec.get("chat_template")
    if not template:
        raise SdllmError("--chat: this model has no chat template (its tokenizer came without one); "
                         "prompt it with plain text instead")
    return template


def _compiled(template: str):
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """{% generation %}...{% endgeneration %}: marks the assistant's part; rendered as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateError as e:
        raise SdllmError(f"chat template: not a valid Jinja template ({' '.join(str(e).split())})") from None


def render(spec: dict, messages: list, add_generation_prompt: bool = True) -> str:
    """The conversation (a list of {"role": ..., "content": ...}) as the model's prompt text;
    with add_generation_prompt, ending where the assistant's reply begins."""
    if not isinstance(messages, list):
        raise SdllmError(f"chat messages: expected a list of {{'role': ..., 'content': ...}}, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise SdllmError(f"chat message {i}: expected {{'role': one of {', '.join(ROLES)}, 'content': text}}, got {m!r:.80}")
    template = template_of(spec)
    variables = dict(messages=messages, add_generation_prompt=bool(add_generation_prompt),
                     bos_token=token_text(spec, spec.get("bos_id")), eos_token=token_text(spec, spec.get("eos_id")))
    return confined.run(lambda: _render(template, variables), "chat template", RENDER_TIME_S, RENDER_MEMORY,
                        4 * MAX_RENDERED_CHARS + 1024)


def _render(template: str, variables: dict) -> str:
    """In the confined child: the text, at most MAX_RENDERED_CHARS of it."""
    import jinja2

    compiled = _compiled(template)
    parts, size = [], 0
    try:
        for part in compiled.generate(**variables):
            size += len(part)
            if size > MAX_RENDERED_CHARS:
                raise SdllmError(f"chat template: renders more than {MAX_RENDERED_CHARS:,} characters")
            parts.append(part)
    except jinja2.exceptions.SecurityError as e:
        raise SdllmError(f"chat template: refused by the sandbox ({e})") from None
    except jinja2.exceptions.TemplateError as e:
        raise SdllmError(f"chat template: {e}") from None
    return "".join(parts)
