"""Chat rendering for the collator: manifest turns -> HF-style messages -> the template's text.

The template is rendered with Jinja the way transformers' ``apply_chat_template``
does (sandboxed, ``trim_blocks``/``lstrip_blocks``, ``loopcontrols``, the
``raise_exception``/``tojson`` helpers, the tokenizer's special tokens as
variables), so the text equals ``processor.apply_chat_template(messages)``.
Assistant spans come from rendering prefixes of the conversation: the text
between ``messages[:i]`` with the generation prompt and ``messages[:i+1]`` is
what turn ``i`` adds after its role header, i.e. what the model must produce.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Mapping, Sequence

from manifests.errors import UserError

#: SmolVLM's chat layout (the image/video-aware template of SmolVLM2 processors): ``<|im_start|>`` once, then
#: ``Role:`` (no space before a leading image, ``': '`` otherwise), the parts, ``<end_of_utterance>\n`` per turn.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% elif part['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                "model": "assistant", "system": "system"}


@lru_cache(maxsize=32)
def compile_template(source: str):
    """A compiled Jinja template in transformers' sandboxed environment (cached per source)."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body (spans come from prefix renders here)."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"chat template does not parse: {exc}", field="chat_template") from None


def split_parts(text: str, markers: Mapping[str, str]) -> list[dict[str, Any]]:
    """A turn's text cut at media placeholders into typed parts (``markers`` maps placeholder -> part type)."""
    if not any(m in text for m in markers):
        return [{"type": "text", "text": text}]
    pattern = "(" + "|".join(re.escape(m) for m in markers) + ")"
    parts: list[dict[str, Any]] = []
    for piece in re.split(pattern, text):
        if piece in markers:
            parts.append({"type": markers[piece]})
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts


def build_messages(
    turns: Sequence[Mapping[str, Any]] | None,
    text: str | None,
    n_images: int,
    n_videos: int,
    *,
    image_token: str = "<image>",
    video_token: str = "<video>",
    system: str = "",
    caption_prompt: str = "",
) -> tuple[list[dict[str, Any]], int, int]:
    """HF chat messages for one manifest row, and the image/video placeholder counts its text had.

    - ``turns`` (``role``/``content`` or LLaVA ``from``/``value``) become messages in order;
      a row without turns is a caption: the user turn holds the media (and ``caption_prompt``),
      the assistant turn the ``text``.
    - Placeholders in the text stay where they are; without any, every image (then video) goes
      at the start of the first user turn, as SmolVLM's examples place them.
    - ``system`` (the strategy's system prompt) is prepended unless the row has a system turn.
    """
    markers = {image_token: "image", video_token: "video"}
    messages: list[dict[str, Any]] = []
    if turns:
        for t in turns:
            role = t.get("role", t.get("from"))
            content = t.get("content", t.get("value"))
            role = ROLE_ALIASES.get(str(role).lower(), str(role).lower()) if role is not None else "user"
            messages.append({"role": role, "content": split_parts(content or "", markers)})
    else:
        user = split_parts(caption_prompt, markers) if caption_prompt else []
        if user or n_images or n_videos:
            messages.append({"role": "user", "content": user})
        if text:
            messages.append({"role": "assistant", "content": split_parts(text, markers)})
    n_img = sum(p["type"] == "image" for m in messages for p in m["content"])
    n_vid = sum(p["type"] == "video" for m in messages for p in m["content"])
    if n_img == 0 and n_vid == 0 and (n_images or n_videos):
        first = next((m for m in messages if m["role"] == "user"), None)
        if first is None:
            first = {"role": "user", "content": []}
            messages.insert(0, first)
        media = [{"type": "image"}] * n_images + [{"type": "video"}] * n_videos
        first["content"] = media + [p for p in first["content"] if not (p["type"] == "text" and not p["text"])]
    for m in messages:
        if not m["content"]:
            m["content"] = [{"type": "text", "text": ""}]
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    return messages, n_img, n_vid


class ChatRenderer:
    """Renders messages with one template; ``spans`` gives the character ranges the assistant writes."""

    def __init__(self, template: str, variables: Mapping[str, Any] | None = None) -> None:
        self.source = template
        self.template = compile_template(template)
        self.variables = dict(variables or {})

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
        import jinja2

        try:
            return self.template.render(messages=list(messages), add_generation_prompt=add_generation_prompt, **self.variables)
        except jinja2.TemplateError as exc:
            raise UserError(f"chat template failed: {exc}", field="chat_template") from None

    def render_with_spans(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        """The whole conversation and, per assistant turn, its (start, end) characters after the role header."""
        full = self.render(messages)
        spans: list[tuple[int, int]] = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            head = self.render(messages[:i], add_generation_prompt=True) if i else self.render([], add_generation_prompt=True)
            upto = self.render(messages[: i + 1])
            if not (full.startswith(upto) and upto.startswith(head)):
                raise UserError(
                    "chat template is not prefix-stable (rendering the first turns does not give a prefix of the "
                    "whole conversation), so assistant turns cannot be located for the labels", field="chat_template",
                )
            spans.append((len(head), len(upto)))
        return full, spans
