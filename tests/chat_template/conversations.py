"""Conversations for the model-template parity (parity.py): each is rendered with
add_generation_prompt false and true, with the context apply_chat_template builds (messages,
tools, documents, add_generation_prompt and the tokenizer's special tokens) plus the template
keyword arguments some cases pass (date_string, builtin_tools, tools_in_user_message)."""

TEMPLATES = {
    # name: the special tokens of the model's tokenizer_config.json
    "llama-3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama-3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "qwen-2.5": {"bos_token": None, "eos_token": "<|im_end|>"},
    "phi-3.5": {"bos_token": "<s>", "eos_token": "<|endoftext|>"},
    "gemma-3": {"bos_token": "<bos>", "eos_token": "<eos>"},
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": None},
                "days": {"type": "integer", "minimum": 1, "maximum": 14.5},
                "détaillé": {"type": "boolean", "description": "Prévisions « heure par heure » \u2014 ü\u00df\u4e2d"},
            },
            "required": ["location"],
        },
    },
}
CALC = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an expression with \"quotes\", a back\\slash and a tab\t.",
        "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}, "required": []},
    },
}
CALL = {"type": "function", "function": {"name": "get_current_weather", "arguments": {"location": "Paris, France", "unit": "celsius", "days": 3}}}
CALL2 = {"type": "function", "function": {"name": "calculate", "arguments": {"expr": "2**10 / 3.5", "nested": {"a": [1, 2.5, True, None], "b": {}}}}}

U = {"role": "user", "content": "What is the capital of France?"}
A = {"role": "assistant", "content": "The capital of France is Paris."}
S = {"role": "system", "content": "You are a concise assistant."}


def conversations():
    yield "user", [U]
    yield "system_user", [S, U]
    yield "multi_turn", [S, U, A, {"role": "user", "content": "And of Germany?"}]
    yield "multi_turn_no_system", [U, A, {"role": "user", "content": "And of Italy?"}, {"role": "assistant", "content": "Rome."}]
    yield "ends_with_assistant", [U, A]
    yield "unicode", [
        {"role": "system", "content": "Réponds en français. 日本語も OK 👍 — «guillemets»"},
        {"role": "user", "content": "Ça va? ¿Qué tal? Привет! مرحبا 🙂 e\u0301 \u00a0nbsp \u200bzwsp"},
        {"role": "assistant", "content": "Très bien, merci ! 🎉"},
        {"role": "user", "content": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 beyond the BMP: 😀🚀"},
    ]
    yield "empty_content", [{"role": "user", "content": ""}]
    yield "empty_system", [{"role": "system", "content": ""}, U]
    yield "whitespace", [
        {"role": "system", "content": "  \n\tpadded system\t \n"},
        {"role": "user", "content": "\n\n  leading and trailing  \n"},
        {"role": "assistant", "content": "   "},
        {"role": "user", "content": "tabs\tand\r\nCRLF\rCR"},
    ]
    yield "specials", [
        {"role": "user", "content": "{{ not a tag }} {% neither %} {# nor #} 'single' \"double\" back\\slash"},
        {"role": "assistant", "content": "<|eot_id|> <|im_end|> <end_of_turn> literal tokens"},
        {"role": "user", "content": "json: {\"a\": [1, 2]}"},
    ]
    yield "long", [{"role": "user", "content": ("A long line of text. " * 400).strip()}]
    yield "many_turns", [m for i in range(12) for m in ({"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"})] + [{"role": "user", "content": "last"}]
    yield "extra_keys", [{"role": "user", "content": "hi", "name": "alice", "id": 7}, {"role": "assistant", "content": "hello", "meta": {"x": 1}}]
    yield "two_systems", [S, {"role": "system", "content": "Second system message."}, U]
    yield "not_alternating", [U, {"role": "user", "content": "Another user turn."}]
    yield "tool_call", [U, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "name": "get_current_weather", "content": "22.5 degrees, sunny"}]
    yield "tool_call_content", [S, U, {"role": "assistant", "content": "Let me check.", "tool_calls": [CALL]},
                                {"role": "tool", "content": {"temperature": 22.5, "unit": "celsius", "ok": True}}, {"role": "assistant", "content": "It is 22.5 °C."}]
    yield "two_tool_calls", [U, {"role": "assistant", "content": "", "tool_calls": [CALL, CALL2]},
                             {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "292.57142857142856"}, {"role": "user", "content": "thanks"}]
    yield "multimodal", [{"role": "system", "content": [{"type": "text", "text": "List system."}]},
                         {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe this image. "}]}]
    yield "tool_list_content", [U, {"role": "assistant", "tool_calls": [CALL2]}, {"role": "tool", "content": [1, "two", {"three": 3.0}]}]


def contexts(name, meta):
    base = {"tools": None, "documents": None}
    base.update({k: v for k, v in meta.items() if v is not None})
    for label, msgs in conversations():
        for gen in (False, True):
            ctx = dict(base, messages=msgs, add_generation_prompt=gen)
            yield f"{label}/gen={int(gen)}", ctx
    # with tools, where the template reads them (the others ignore tools; rendered anyway)
    for label, msgs in [("tools_user", [U]), ("tools_system", [S, U]), ("tools_call", [S, U, {"role": "assistant", "tool_calls": [CALL]},
                                                                                       {"role": "tool", "content": "sunny"}])]:
        for gen in (False, True):
            yield f"{label}/gen={int(gen)}", dict(base, messages=msgs, add_generation_prompt=gen, tools=[WEATHER, CALC])
    if name.startswith("llama"):
        yield "tools_in_system", dict(base, messages=[S, U], add_generation_prompt=True, tools=[WEATHER], tools_in_user_message=False)
        yield "date_string", dict(base, messages=[U], add_generation_prompt=True, date_string="01 Jan 2030")
        yield "no_messages_tools", dict(base, messages=[S], add_generation_prompt=True, tools=[WEATHER])
    if name == "llama-3.1":
        yield "builtin_tools", dict(base, messages=[S, U], add_generation_prompt=True, builtin_tools=["brave_search", "code_interpreter", "wolfram_alpha"])
        yield "builtin_call", dict(base, messages=[U, {"role": "assistant", "tool_calls": [{"function": {"name": "brave_search", "arguments": {"query": "weather Paris", "lang": "fr"}}}]},
                                                   {"role": "ipython", "content": "sunny"}], add_generation_prompt=True, builtin_tools=["brave_search"])
