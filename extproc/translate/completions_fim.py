"""Fill-in-the-middle prompt templates: how a code model takes a prefix and a suffix in one prompt.

A model declares FIM with the capability `fim`; how it takes the suffix is its deployment's
business:
- `suffix` passed through: OpenAI-compatible servers whose `/v1/completions` accepts it (OpenAI's
  `gpt-3.5-turbo-instruct`, DeepSeek's beta completions at `/beta`) — the default;
- a template applied by the gateway (`fim_template` on the model): servers whose completions
  endpoint takes only `prompt` (vLLM, SGLang, TGI serving a code model). The gateway writes the
  model's own special tokens around the client's `prompt` (the prefix) and `suffix`, and sends
  the result as `prompt` without `suffix`;
- the native FIM provider type `mistral` (Codestral's `POST /v1/fim/completions`).

Presets (the models' published FIM formats, from their model cards and tokenizer configs):

| name | models | template |
|---|---|---|
| `qwen` | Qwen2.5-Coder, CodeGemma | `<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>` |
| `starcoder` | StarCoder, StarCoder2, SantaCoder | `<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>` |
| `codellama` | Code Llama | `<PRE> {prefix} <SUF>{suffix} <MID>` |
| `deepseek` | DeepSeek-Coder | `<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>` |

Any other value is a literal template holding `{prefix}` and `{suffix}` once each; the rest of
the text is taken as is (braces included: it is not a format string). Pure.
"""

from __future__ import annotations

PREFIX, SUFFIX = "{prefix}", "{suffix}"

PRESETS = {
    "qwen": "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
    "starcoder": "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
    "codellama": "<PRE> {prefix} <SUF>{suffix} <MID>",
    "deepseek": "<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>",
}


def resolve_template(value: str) -> str:
    """The literal template a `fim_template` setting names (a preset or a literal). ValueError
    with the reason when it is neither."""
    template = PRESETS.get(value, value)
    if template.count(PREFIX) != 1 or template.count(SUFFIX) != 1 or template.index(PREFIX) > template.index(SUFFIX):
        raise ValueError(f"must be one of {', '.join(PRESETS)} or a template holding {PREFIX} and then {SUFFIX} "
                         "once each")
    return template


def apply_template(template: str, prefix: str, suffix: str) -> str:
    """The one prompt a template-FIM model reads: `template` with the client's prompt and suffix
    in their places (inserted text is never searched for placeholders)."""
    head, rest = template.split(PREFIX, 1)
    middle, tail = rest.split(SUFFIX, 1)
    return head + prefix + middle + suffix + tail
