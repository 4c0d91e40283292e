"""The chat template written into tokenizer_config.json of generated checkpoints (spec §4.3).

Qwen3-style ChatML plus MiniCPM-o's two generation-prompt flags:
  * `enable_thinking` defined and false -> an empty think block is pre-filled;
  * `use_tts_template` defined and true -> `<|tts_bos|>` opens the spoken-text span.
Message content may be a string or a list of OpenAI-style parts ({"type": "text", "text": ...});
only text parts are rendered (media placeholders are expanded by the processor, not here).
Assistant reasoning (`reasoning_content`, or a `<think>...</think>` prefix in the content) is kept
only for turns after the last real user query, as Qwen3 does.

Written without Jinja macros (namespaces and loops only) so that both jinja2 and llama.cpp's
template engine can run it. The tool-use instructions are part of the model's trained prompt
format, so their wording is fixed.
"""

_CONTENT_TO_TEXT = (
    # sets ns_c.text from message.content (string, list of parts, or none)
    "{%- set ns_c = namespace(text='') -%}"
    "{%- if message.content is string -%}{%- set ns_c.text = message.content -%}"
    "{%- elif message.content is not none -%}"
    "{%- for part in message.content -%}"
    "{%- if part is string -%}{%- set ns_c.text = ns_c.text + part -%}"
    "{%- elif part.type == 'text' -%}{%- set ns_c.text = ns_c.text + part.text -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
)

_TOOLS_INTRO = (
    "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>"
)
_TOOLS_OUTRO = (
    "\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call>'
)

CHAT_TEMPLATE = (
    # 1. system block (with the tool list when tools are given)
    "{%- set message = messages[0] if messages else none -%}"
    "{%- if message is not none -%}" + _CONTENT_TO_TEXT + "{%- endif -%}"
    "{%- set first_is_system = message is not none and message.role == 'system' -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if first_is_system -%}{{- ns_c.text + '\\n\\n' -}}{%- endif -%}"
    "{{- \"" + _TOOLS_INTRO + "\" -}}"
    "{%- for tool in tools -%}{{- '\\n' -}}{{- tool | tojson -}}{%- endfor -%}"
    "{{- \"" + _TOOLS_OUTRO + "<|im_end|>\\n\" -}}"
    "{%- elif first_is_system -%}"
    "{{- '<|im_start|>system\\n' + ns_c.text + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    # 2. index of the last real user query (not a wrapped tool response)
    "{%- set ns = namespace(searching=true, last_query=messages|length - 1) -%}"
    "{%- for message in messages[::-1] -%}"
    "{%- if ns.searching and message.role == 'user' -%}" + _CONTENT_TO_TEXT +
    "{%- if not (ns_c.text.startswith('<tool_response>') and ns_c.text.endswith('</tool_response>')) -%}"
    "{%- set ns.searching = false -%}{%- set ns.last_query = messages|length - 1 - loop.index0 -%}"
    "{%- endif -%}{%- endif -%}"
    "{%- endfor -%}"
    # 3. the turns
    "{%- for message in messages -%}" + _CONTENT_TO_TEXT +
    "{%- set content = ns_c.text -%}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- elif message.role == 'assistant' -%}"
    "{%- set reasoning = '' -%}"
    "{%- if message.reasoning_content is string -%}{%- set reasoning = message.reasoning_content -%}"
    "{%- elif '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n')"
    ".split('<think>')[-1].lstrip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{%- if loop.index0 > ns.last_query and (loop.last or reasoning) -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') -}}"
    "{%- else -%}"
    "{{- '<|im_start|>assistant\\n' + content -}}"
    "{%- endif -%}"
    "{%- if message.tool_calls -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- if not loop.first or content -%}{{- '\\n' -}}{%- endif -%}"
    "{%- set fn = call.function if call.function is defined else call -%}"
    "{{- '<tool_call>\\n{\"name\": \"' + fn.name + '\", \"arguments\": ' -}}"
    "{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- elif message.role == 'tool' -%}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' -}}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    # 4. generation prompt with the MiniCPM-o flags
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- if use_tts_template is defined and use_tts_template is true -%}{{- '<|tts_bos|>' -}}{%- endif -%}"
    "{%- endif -%}"
)
