"""Edge-case templates for parity.py: each (template, context) must render byte-identically to
Jinja2 under transformers' settings, or fail on both sides (with the same message for
raise_exception). UNSUPPORTED lists constructs kiln refuses: the error must contain each string."""

M = [{"role": "system", "content": " sys "}, {"role": "user", "content": "hi\n"}, {"role": "assistant", "content": "yo"}]
D = {"b": 2, "a": 1, "é": "ü", "n": None, "t": True, "f": 1.5, "l": [1, "x", None], "d": {"k": []}}
C = {"messages": M, "d": D, "s": "  Hello, World  ", "n": 7, "f": 2.5, "e": "", "l": [3, 1, 2], "u8": "héllo wörld 日本 😀",
     "items": [{"name": "a", "v": 1, "ok": True}, {"name": "b", "v": 2, "ok": False}, {"name": "c", "ok": None}],
     "bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": True, "tools": None}

CASES = []


def case(src, ctx=None):
    CASES.append((src, C if ctx is None else ctx))


# ---- control flow ----
case("{% if n > 5 %}big{% elif n > 2 %}mid{% else %}small{% endif %}")
case("{% if n < 5 %}big{% elif n > 6 %}mid{% else %}small{% endif %}")
case("{% if not e %}empty{% endif %}{% if e %}x{% else %}y{% endif %}")
case("{% if missing %}a{% elif missing is undefined %}b{% endif %}")
case("{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.length }}/{{ loop.revindex }}/{{ loop.revindex0 }}"
     "{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}:{{ m.role }};{% endfor %}")
case("{% for x in l %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}|{{ loop.cycle('odd', 'even') }} {% endfor %}")
case("{% for x in [] %}no{% else %}empty-else{% endfor %}")
case("{% for x in l if x > 1 %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}")
case("{% for x in l if x > 5 %}{{ x }}{% else %}none{% endfor %}")
case("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}")
case("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}")
case("{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %}")
case("{% for k in d %}{{ k }},{% endfor %}")
case("{% for c in u8 %}[{{ c }}]{% endfor %}")
case("{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}")
case("{% for (a, b) in [(1, 2), [3, 4]] %}{{ a + b }}{% endfor %}")
case("{% for a, b in [(1, 2, 3)] %}{{ a }}{% endfor %}")
case("{% for x in n %}{{ x }}{% endfor %}")
case("{% for x in missing %}{{ x }}{% else %}nothing{% endfor %}")
case("{% for x in none %}{{ x }}{% endfor %}")
# ---- set and scoping ----
case("{% set x = 1 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}")
case("{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}")
case("{% set ns = namespace(count=0, items=[]) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}{% endfor %}{{ ns.count }}{{ ns.items }}")
case("{% set ns = namespace() %}{% set ns.found = false %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}")
case("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c, = [9] %}{{ c }}")
case("{% set x %}block {{ n }}\n{% endset %}[{{ x }}]")
case("{% set x = messages[1:] %}{{ x|length }}{{ messages|length }}")
case("{% set messages = messages[1:] %}{{ messages[0].role }}")
case("{% set y = 5 %}{{ y }}{% set y = y * 2 %}{{ y }}")
case("{% set s = 'a' %}{% for i in range(2) %}{% set s = s ~ i %}{{ s }}{% endfor %}{{ s }}")
case("{% set ns = namespace(a=1) %}{% set ns._x = 1 %}")
case("{% set x = 1 %}{% set x.y = 2 %}")
case("{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{{ ns.c }}")
case("{% set d2 = dict(a=1, b='two') %}{{ d2 }}{{ d2.a }}")
# ---- whitespace control ----
case("a  \n  {% if true %}\n  b\n  {% endif %}\n  c")
case("a  \n  {%- if true -%}\n  b\n  {%- endif -%}\n  c")
case("a  \n  {%+ if true +%}\n  b\n  {%+ endif %}  \n  c")
case("a \n {{- n -}} \n b")
case("a \n {{ n }} \n b {{+ n }}")
case("x\n    {# comment #}\n    y\n  {#- trimmed -#}  z\n{#+ keep +#}\nw")
case("{% raw %}{{ not evaluated }} {% if %}{% endraw %}|\n  {%- raw -%}  spaced  {%- endraw -%}  |")
case("{% raw %}\nkeep{% endraw %}\ntail")
case("  {% if true %}indented{% endif %}\n\t{% if true %}tab{% endif %}\n")
case("text {% if true %}inline{% endif %} text\n")
case("line1\r\nline2\r\n{% if true %}\r\nx\r\n{% endif %}\r\n")
case("trailing newline kept once\n\n")
case("one trailing newline dropped\n")
case("{{ 'a' }}\n{{ 'b' }}\n")
case("{% for i in range(3) %}\n  {{ i }}\n{% endfor %}\n")
case("{%- for i in range(3) -%}\n  {{- i -}}\n{%- endfor -%}")
case("\u00a0\u3000{% if true %}x{% endif %}")
case("a\u2003 {%- if true %}b{% endif %}")
case("{% macro m() %}\n  M\n{% endmacro %}\n[{{ m() }}]")
case("{% set x -%}\n  v  \n{%- endset %}[{{ x }}]")
case("    {%- if true %}a{% endif %}\n    {{ 'b' }}")
case("{{ '{{' }} {{ '}}' }} {{ '{%' }}")
case("{{ {'a': {'b': 1}} }}")
case("{{ [{'a': 1}] }}{{ ({'x': 2})['x'] }}")
# ---- literals ----
case(r"""{{ '\n' }}|{{ "\t" }}|{{ '\x41\u00e9\U0001F600' }}|{{ '\\' }}|{{ '\q\d' }}|{{ '\101\0' | length }}|{{ 'it\'s' }}|{{ "say \"hi\"" }}""")
case("{{ 'ab' 'cd' \"ef\" }}")
case("{{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000 }} {{ 1.5e3 }} {{ 2E-3 }} {{ 1_0.5 }} {{ 007 if false else 0 }}")
case("{{ [1, 'a', none, true, false, 1.0] }}{{ (1,) }}{{ (1, 2) }}{{ () }}{{ {} }}{{ {'k': 'v', 1: 2} }}")
case("{{ True }}{{ False }}{{ None }}{{ true }}{{ none }}")
case("{{ 'multi\nline' }}")
# ---- operators ----
case("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ -2 ** 2 }} {{ 2 ** -1 }}")
case("{{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1 / 3 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 1e-5 }} {{ 0.0001 }} {{ -0.0 }} {{ 123456789.123 }} {{ 1.0 }} {{ 3.0 * 2 }}")
case("{{ 'a' ~ 1 ~ none ~ missing ~ [1] ~ 2.0 }}")
case("{{ 'ab' * 3 }}{{ 2 * 'x' }}{{ [1] + [2] }}{{ 'a' + 'b' }}{{ 'x' * 0 }}")
case("{{ 1 == 1.0 }} {{ 1 != 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ true == 1 }} {{ none == none }} {{ missing == missing }}")
case("{{ 'a' in 'cat' }} {{ 'x' not in 'cat' }} {{ 2 in l }} {{ 'a' in d }} {{ 'z' in d }} {{ 1 in missing }} {{ '' in 'abc' }}")
case("{{ 1 and 2 }} {{ 0 and 2 }} {{ 0 or 'x' }} {{ '' or [] }} {{ not 0 }} {{ not 'a' }} {{ none or missing }}")
case("{{ 'x' if n > 1 else 'y' }}{{ 'z' if n < 1 }}|{{ 'a' if false else 'b' if true else 'c' }}")
case("{{ not n is none }} {{ not n == 7 }} {{ -n|abs }} {{ - 3|abs }}")
case("{{ 'a' + 1 }}")
case("{{ missing + 1 }}")
case("{{ 1 / 0 }}")
case("{{ 1 // 0 }}")
case("{{ 'a' < 1 }}")
case("{{ 1 in 'abc' }}")
case("{{ 1 in 5 }}")
case("{{ -'a' }}")
# ---- access ----
case("{{ messages[0]['role'] }} {{ messages[0].role }} {{ messages[-1].content }} {{ messages[5] }} {{ messages[1:][0].content }}")
case("{{ l[::-1] }} {{ l[1:] }} {{ l[:-1] }} {{ l[::2] }} {{ l[-2:] }} {{ l[5:] }} {{ l[1:2:1] }} {{ l[3:0:-1] }}")
case("{{ u8[1:4] }}|{{ u8[-1] }}|{{ u8[::-1] }}|{{ u8[::3] }}|{{ s[2:7] }}|{{ u8[100] }}")
case("{{ d.a }} {{ d['b'] }} {{ d.missing }} {{ d['é'] }} {{ d.l[1] }} {{ d.d.k }} {{ d.l.0 }}")
case("{{ n.foo }}|{{ none.foo }}|{{ s.foo }}|{{ l.foo }}|{{ n[0] }}")
case("{{ missing.foo }}")
case("{{ missing[0] }}")
case("{{ missing[1:] }}")
case("{{ l[::0] }}")
case("{{ l['a':] }}")
# ---- methods ----
case("[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxaxx'.strip('x') }}][{{ '--a-'.lstrip('-') }}][{{ u8.strip('hé😀') }}]")
case("{{ s.startswith('  He') }} {{ s.endswith('  ') }} {{ s.startswith(('x', '  H')) }} {{ u8.endswith('😀') }} {{ ''.startswith('') }}")
case("{{ 'a b  c'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ '  x  y '.split(none, 1) }} {{ ''.split() }} {{ ''.split(',') }}")
case("{{ u8.upper() }} {{ 'ÀÉÎ straße'.lower() }} {{ 'straße'.upper() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }}")
case("{{ 'aaa'.replace('a', 'b') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'abc'.replace('', '-') }} {{ 'abc'.find('c') }} {{ 'abc'.find('z') }} {{ '-'.join(['a', 'b']) }}")
case("{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.keys() }} {{ d.values() }} {{ d.items() }} {{ d.items()|list }}")
case("{{ 'x'.split('') }}")
# ---- tests ----
case("{{ n is defined }} {{ missing is defined }} {{ missing is undefined }} {{ none is none }} {{ n is none }} {{ s is string }} {{ n is string }}")
case("{{ n is number }} {{ f is number }} {{ true is number }} {{ s is number }} {{ n is integer }} {{ f is float }} {{ true is boolean }}")
case("{{ s is iterable }} {{ l is iterable }} {{ d is iterable }} {{ n is iterable }} {{ missing is iterable }} {{ none is iterable }}")
case("{{ d is mapping }} {{ l is mapping }} {{ l is sequence }} {{ s is sequence }} {{ d is sequence }} {{ n is sequence }} {{ missing is sequence }}")
case("{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }}")
case("{{ n is equalto 7 }} {{ n is eq 8 }} {{ n is ne 8 }} {{ n is lt 8 }} {{ n is gt 8 }} {{ n is le 7 }} {{ n is ge 8 }} {{ 2 is in l }} {{ n is not none }}")
case("{{ none is sameas none }} {{ n is sameas 7 }} {{ l is sameas l }} {{ namespace is callable }} {{ n is callable }}")
case("{{ l|select('odd')|list }} {{ l|reject('odd')|list }} {{ [0, 1, '', 'a', none]|select|list }} {{ l|select('gt', 1)|list }} {{ l|select('in', [1, 2])|list }}")
# ---- filters ----
case("[{{ s|trim }}][{{ 'xxhixx'|trim('x') }}][{{ n|trim }}][{{ missing|trim }}][{{ '\u3000\u00a0 wide \u2003'|trim }}]")
case("{{ l|length }} {{ s|count }} {{ d|length }} {{ u8|length }} {{ missing|length }} {{ ''|length }}")
case("{{ n|length }}")
case("{{ d|tojson }}\n{{ d|tojson(indent=2) }}\n{{ d|tojson(sort_keys=true) }}\n{{ l|tojson(separators=(',', ':')) }}\n{{ u8|tojson }}\n{{ u8|tojson(ensure_ascii=true) }}")
case("{{ [[], {}, [[1]], {'a': {}}]|tojson(indent=4) }}{{ none|tojson }}{{ 'q\"\\\\\n\t\x01\x7f'|tojson }}{{ 1.0|tojson }}{{ -0.5e-9|tojson }}{{ 12345678901234|tojson }}")
case("{{ d|tojson(indent=0) }}{{ l|tojson(true) }}{{ {'x': (1, 2)}|tojson }}")
case("{{ missing|tojson }}")
case("{{ items|tojson(indent=2, sort_keys=true) }}")
case("{{ l|join }} {{ l|join(', ') }} {{ items|join('|', attribute='name') }} {{ missing|join(',') }} {{ u8|join('.') }} {{ [none, 1.5, true]|join }}")
case("{{ l|list }} {{ s|list }} {{ d|list }} {{ missing|list }} {{ (1, 2)|list }}")
case("{{ l|first }} {{ l|last }} {{ s|first }} {{ u8|last }} {{ []|first }}|{{ d|first }} {{ d|last }} {{ missing|first }}|{{ missing|last }}")
case("{{ s|upper }} {{ s|lower }} {{ 'hELLO wORLD'|capitalize }} {{ 'hello-big  world(x'|title }} {{ n|upper }}")
case("{{ s|replace('l', 'L') }} {{ s|replace('l', 'L', 1) }} {{ 'aaa'|replace('a', '') }} {{ n|replace(7, 8) }}")
case("{{ missing|default('dflt') }} {{ none|default('dflt') }} {{ ''|default('dflt') }} {{ ''|default('dflt', true) }} {{ 0|d('z', boolean=true) }} {{ n|default }} {{ missing|default }}|")
case("{{ items|selectattr('ok')|map(attribute='name')|list }} {{ items|rejectattr('ok')|map(attribute='name')|list }} {{ items|selectattr('v', 'defined')|list|length }}")
case("{{ items|selectattr('name', 'equalto', 'b')|first }} {{ items|rejectattr('ok', 'none')|map(attribute='v')|join(',') }} {{ items|selectattr('ok', 'true')|list|length }}")
case("{{ items|map(attribute='v', default=0)|list }} {{ items|map(attribute='v')|list }} {{ l|map('string')|join('-') }} {{ ['a', 'b']|map('upper')|list }} {{ [' a ']|map('trim')|list }}")
case("{{ ['x', 'y']|reject('equalto', 'x')|list }} {{ [{'a': {'b': 1}}, {'a': {'b': 2}}]|map(attribute='a.b')|list }} {{ [[1, 2], [3, 4]]|map(attribute='1')|list }}")
case("{{ n|string + '!' }} {{ l|string }} {{ none|string }} {{ missing|string }}|{{ 1.5|string }}")
case("{{ '42'|int }} {{ ' 7 '|int }} {{ '3.9'|int }} {{ 'abc'|int }} {{ 'abc'|int(5) }} {{ 3.9|int }} {{ -3.9|int }} {{ true|int }} {{ none|int }} {{ '1_000'|int }} {{ '0x1A'|int(base=16) }} {{ '1e3'|int }}")
case("{{ '4.5'|float }} {{ 3|float }} {{ 'x'|float }} {{ ' 2 '|float }} {{ none|float(1.5) }} {{ -5|abs }} {{ -2.5|abs }}")
case("{{ d|items|list }} {{ missing|items|list }}")
case("{{ l|reverse|list }} {{ u8|reverse }} {{ '<a href=\"x\">&\\'</a>'|e }} {{ '<b>'|escape }} {{ '<i>'|safe }}")
case("{% if l|select('gt', 10) %}generator-truthy{% endif %}{% if [] %}no{% endif %}{% if d.items() %}items{% endif %}")
case("{{ l|selectattr('x')|length }}")
case("{{ l|select('gt', 1)|last }}")
case("{{ n|nosuchfilter }}")
case("{{ n is nosuchtest }}")
# ---- macros ----
case("{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(punct='.', name='c') }} [{{ greet() }}]")
case("{% macro outer(x) %}<{{ inner(x) }}>{% endmacro %}{% macro inner(y) %}{{ y * 2 }}{% endmacro %}{{ outer(4) }}")
case("{% macro fact(k) %}{% if k <= 1 %}1{% else %}{{ k }}*{{ fact(k - 1) }}{% endif %}{% endmacro %}{{ fact(5) }}")
case("{% macro loop_() %}{{ loop_() }}{% endmacro %}{{ loop_() }}")
case("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}")
case("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=1) }}")
case("{% macro m() %}{{ n }}{% endmacro %}{% set n = 99 %}{{ m() }}")
case("{{ undefined_fn() }}")
case("{{ n() }}")
# ---- globals ----
case("{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}")
case("before{% if true %}{{ raise_exception('msg with \"quotes\" and ünïcode') }}{% endif %}")
case("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S') }}|{{ strftime_now('%A %B %j %p %y %e') }}")
case("{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }} {{ range(0)|list }} {{ range(3)|length }}")
case("{{ range(10000000) }}")
case("{{ strftime_now is defined }} {{ raise_exception is defined }} {{ namespace is defined }}")
case("{% generation %}gen {{ n }}{% endgeneration %}|")
# ---- printing ----
case("{{ d }}|{{ l }}|{{ items }}|{{ [none, true, 1.5, 'it\\'s', 'say \"x\"', 'both \\' \"'] }}|{{ [missing] }}")
case("{{ ['\\x00\\x1f\\x7f\\x80\\xa0\\xad', '\u2028\u200b\ue000', 'é日😀', '\\\\'] }}")
case("{{ [1e100, 1.5e-7, 100.0, 2.5e16, 0.1, -1.25] }} {{ [12345678901234567890.0] }}")
case("{{ (1, 'a') }} {{ ('x',) }} {{ d.items()|list|first }}")
case("{{ loop }}|{{ namespace(a=1).a }}")
# ---- syntax errors (compile time) ----
case("{% if n %}unclosed")
case("{% for x in l %}unclosed")
case("{{ n ")
case("{{ 'unterminated }}")
case("{% endif %}")
case("{% unknowntag %}")
case("{{ n + }}")
case("{# unclosed comment")
case("{% if n %}{% else %}{% else %}{% endif %}")
case("{{ (1, 2 }}")
case("{{ ] }}")
case("{% break %}")
case("{% set %}")
case("{{ 1 is is none }}")
case("{% macro m(a=1, b) %}{% endmacro %}")
case("{{ x = 1 }}")
case("{% for %}{% endfor %}")
case("{{ }}")

case("[{{ 'a\nb\n\nc'|indent }}][{{ 'a\nb'|indent(2, true) }}][{{ 'a\n\nb\n'|indent(width='> ', blank=true) }}][{{ ''|indent(first=true) }}]"
     "[{{ 'x\r\ny\rz\x0bw\u2028v'|indent(1) }}][{{ d|tojson(indent=2)|indent(4) }}][{{ 'a\nb'|indent(-1) }}][{{ 'q'|indent(true) }}]")
case("{{ n|indent }}")
case("{{ missing|indent }}")

UNSUPPORTED = [
    ("{% include 'other.jinja' %}", C, ["line 1, column 4", "include"]),
    ("x\n  {% extends 'base' %}", C, ["line 2, column 6", "extends"]),
    ("{% block content %}{% endblock %}", C, ["line 1, column 4", "block"]),
    ("{% call m() %}{% endcall %}", C, ["line 1, column 4", "call"]),
    ("{{ s|wordwrap(5) }}", C, ["line 1, column 6", "wordwrap"]),
    ("{{ l|sort }}", C, ["line 1, column 6", "sort"]),
    ("\n\n{% for x in l recursive %}{% endfor %}", C, ["line 3, column 15", "recursive"]),
    ("{{ '%s' % n }}", C, ["line 1, column 9", "formatting"]),
    ("{{ d[1:2, 3] }}", C, ["line 1, column 6", "tuple subscript"]),
    ("{{ range(*l) }}", C, ["line 1, column 10", "*args"]),
    ("{{ 'a{}'.format(1) }}", C, ["line 1", "format"]),
    ("{{ s is escaped }}", C, ["line 1, column 9", "escaped"]),
    ("{{ l|select('odd') }}", C, ["line 1", "generator"]),
    ("{{ l.append(1) }}", C, ["line 1", "append"]),
    ("{{ d.items }}", C, ["line 1", "items"]),
    ("{% for x in l %}{{ loop.changed(x) }}{% endfor %}", C, ["line 1, column 32", "changed"]),
    ("{{ d['items'] }}", C, ["line 1, column 5", "items"]),
    ("{{ 'x'.zfill(3) }}", C, ["line 1, column 13", "zfill"]),
    ("{{ n|items }}", C, ["line 1, column 5", "mapping"]),
    ("{{ l|map('nonexistent') }}", C, ["line 1, column 5", "nonexistent"]),
    ("{{ namespace(a=1) }}", C, ["line 1", "Namespace"]),
    ("{{ 99999999999999999999 }}", C, ["line 1, column 4", "64 bits"]),
    ("{% set x | upper %}a{% endset %}", C, ["line 1, column 10", "filtered block"]),
]

# ---- whitespace control around every tag kind: each left/right modifier, in several surroundings ----
_TAGS = {
    "var": ("{{%s n %s}}", ""),
    "if": ("{%%%s if true %s%%}I{%%%s endif %s%%}", None),
    "comment": ("{#%s c %s#}", ""),
    "set": ("{%%%s set y = 1 %s%%}", ""),
    "for": ("{%%%s for i in [1, 2] %s%%}<{{ i }}>{%%%s endfor %s%%}", None),
    "raw": ("{%%%s raw %s%%} r {%%%s endraw %s%%}", None),
    "macro": ("{%%%s macro mm() %s%%} m {%%%s endmacro %s%%}{{ mm() }}", None),
    "generation": ("{%%%s generation %s%%}g{%%%s endgeneration %s%%}", None),
}
_BEFORE = ["a \n  ", "\n\t ", "x", "", " \u00a0"]
_AFTER = [" \n b", "\n\n", "y", "\n  \n"]
for _kind, (_fmt, _) in _TAGS.items():
    for _l in ("", "-", "+"):
        for _r in ("", "-", "+"):
            if _kind == "var" and _r == "+":
                continue  # "+}}" is an operator, not a modifier: a syntax error on both sides (covered once below)
            _n = _fmt.count("%s")
            _tag = _fmt % ((_l, _r) * (_n // 2))
            for _b in _BEFORE:
                for _a in _AFTER:
                    case(_b + _tag + _a)
            # the tag on its own line between lines, twice (the second sees the first's trimming)
            case("line\n    " + _tag + "\n    " + _tag + "\nend")
case("{{ n +}}")

# ---- random expressions (seeded): values, operators, filters, tests and methods combined ----
import random as _random

_rng = _random.Random(20261203)
_ATOMS = ["n", "f", "s", "e", "l", "d", "u8", "missing", "none", "true", "false", "0", "1", "-3", "2.5", "1e20", "0.1",
          "'ab'", "'é日'", "''", "[1, 2, 3]", "['b', 'a']", "[]", "{'k': 1, 'j': [2]}", "(1, 'x')", "d.a", "d.f", "l[0]",
          "l[-1]", "messages[0].content", "messages|length", "items[0]", "3.0", "-0.5", "7 // 2", "'  pad '"]
_BIN = ["+", "-", "*", "/", "//", "%", "~", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or", "**"]
_FILTERS = ["trim", "length", "tojson", "list", "first", "last", "upper", "lower", "capitalize", "string", "int", "float",
            "abs", "join(',')", "default('D')", "default('D', true)", "replace('a', 'X')", "tojson(indent=1)",
            "select('odd')|list", "reject('none')|list", "map('string')|list", "title", "reverse|list", "e", "items|list",
            "tojson(sort_keys=true)", "trim('a')", "count", "int(9)"]
_TESTS = ["defined", "undefined", "none", "string", "number", "iterable", "mapping", "sequence", "true", "false",
          "integer", "float", "boolean", "odd", "even", "divisibleby(2)", "equalto 1", "in [1, 'ab']", "gt 1", "callable"]
_METHODS = ["strip()", "upper()", "lower()", "split()", "split('a')", "startswith('a')", "endswith('b')", "replace('a', 'b')",
            "title()", "capitalize()", "lstrip('a')", "rstrip()", "find('b')", "items()|list", "get('k')", "get('z', 0)",
            "keys()|list", "values()|list"]


def _expr(depth):
    r = _rng.random()
    if depth <= 0 or r < 0.25:
        return _rng.choice(_ATOMS)
    if r < 0.45:
        return f"({_expr(depth - 1)} {_rng.choice(_BIN)} {_expr(depth - 1)})"
    if r < 0.6:
        return f"({_expr(depth - 1)})|{_rng.choice(_FILTERS)}"
    if r < 0.7:
        return f"({_expr(depth - 1)} is {_rng.choice(['', 'not '])}{_rng.choice(_TESTS)})"
    if r < 0.8:
        return f"({_expr(depth - 1)}).{_rng.choice(_METHODS)}"
    if r < 0.87:
        return f"({_expr(depth - 1)} if {_expr(depth - 1)} else {_expr(depth - 1)})"
    if r < 0.94:
        a, b = _rng.choice(["", "1", "-1", "-2", "0"]), _rng.choice(["", "2", "-1", "10"])
        st = _rng.choice(["", ":2", ":-1"])
        return f"({_expr(depth - 1)})[{a}:{b}{st}]"
    return f"not {_expr(depth - 1)}"


for _i in range(600):
    case("{{ " + _expr(3) + " }}")

# ---- random templates (seeded): nested if/for/set/namespace/break/continue/comments with random
# whitespace and -/+ modifiers, over the conversation ----
_SEXPR = ["m.role", "m.content", "loop.index", "loop.first", "loop.last", "loop.length", "loop.revindex0", "x", "ns.k",
          "v", "n", "messages|length", "m.content|trim", "m.role == 'user'", "x is defined", "v is undefined",
          "ns.k > 1", "loop.index0 % 2", "m.content|tojson", "loop.previtem", "(x or 0) + 1", "'t' ~ x"]
_GEXPR = [e for e in _SEXPR if not e.startswith(("m.", "loop.", "(x")) and "loop" not in e]
_LISTS = ["messages", "l", "range(3)", "messages[1:]", "d|list", "[]", "items"]


def _ws():
    return _rng.choice(["", " ", "\n", "\n  ", "  \n", "\t", "\n\n", " x "])


def _mod():
    return _rng.choice(["", "", "-", "+"])


def _tag(body):
    return "{%" + _mod() + " " + body + " " + _rng.choice(["", "", "-"]) + "%}"


def _stmts(depth, in_loop):
    ex = _SEXPR if in_loop else _GEXPR
    out = []
    for _ in range(_rng.randint(1, 3)):
        r = _rng.random()
        if depth <= 0 or r < 0.3:
            out.append(_ws() + "{{" + _rng.choice(["", "-"]) + " " + _rng.choice(ex) + " " + _rng.choice(["", "-"]) + "}}" + _ws())
        elif r < 0.45:
            out.append(_tag(f"if {_rng.choice(ex)}") + _stmts(depth - 1, in_loop) +
                       (_tag(f"elif {_rng.choice(ex)}") + _stmts(depth - 1, in_loop) if _rng.random() < 0.4 else "") +
                       (_tag("else") + _stmts(depth - 1, in_loop) if _rng.random() < 0.5 else "") + _tag("endif"))
        elif r < 0.62:
            var = _rng.choice(["m", "x"])
            flt = f" if {_rng.choice(ex)}" if _rng.random() < 0.2 else ""
            out.append(_tag(f"for {var} in {_rng.choice(_LISTS)}{flt}") + _stmts(depth - 1, True) +
                       (_tag("else") + _stmts(depth - 1, in_loop) if _rng.random() < 0.3 else "") + _tag("endfor"))
        elif r < 0.72:
            out.append(_tag(f"set {_rng.choice(['x', 'v'])} = {_rng.choice(ex)}"))
        elif r < 0.8:
            out.append(_tag(f"set ns.k = {_rng.choice(['ns.k + 1', 'loop.index', 'x', '0'])}"))
        elif r < 0.86 and in_loop:
            out.append(_tag(f"if {_rng.choice(ex)}") + _tag(_rng.choice(["break", "continue"])) + _tag("endif"))
        elif r < 0.93:
            out.append(_ws() + "{#" + _mod() + " note " + _rng.choice(["", "-"]) + "#}" + _ws())
        else:
            out.append(_ws() + "  text \t" + _ws())
    return "".join(out)


for _i in range(400):
    case(_tag("set ns = namespace(k=0)") + _ws() + _stmts(3, False) + _ws() + "{{ ns.k }}")
case("{% for x in [1, 2] %}{{ x }}{% break %}{% else %}E{% endfor %}|{% for x in [1, 2] %}{{ x }}{% continue %}{% else %}E{% endfor %}"
     "|{% for x in [1, 2] %}{{ x }}{% if x == 1 %}{% continue %}{% endif %}{% else %}E{% endfor %}")
case("{{ ['a', 'A', 'b', 'a']|unique|list }} {{ ['a', 'A']|unique(case_sensitive=true)|list }} {{ [1, 1.0, true, 2]|unique|list }}"
     " {{ items|unique(attribute='ok')|map(attribute='name')|list }} {{ 'abAB'|unique|join }} {{ missing|unique|list }}")
case("{{ [[1], [1]]|unique|list }}")
case("{% filter upper %}a{{ n }}b{% endfilter %}|{%- filter trim -%}\n  x  \n{%- endfilter %}|{% filter replace('a', 'b')|upper %}aa{% endfilter %}"
     "|{% filter indent(2, true) %}l1\nl2{% endfilter %}|{% for i in [1, 2] %}{% filter trim %} {{ i }} {% if i == 1 %}{% continue %}{% endif %}{% endfilter %}{% endfor %}")
case("{% filter nosuch %}x{% endfilter %}")
case("{% filter upper %}x")
# unknown filters and tests: compile errors, except inside an if or inline if (runtime errors when reached)
case("{% if false %}{{ x|nosuch }}{{ x is nosuch }}{% endif %}ok{{ 1 if true else x|nosuch2 }}")
case("{% if true %}{{ x|nosuch }}{% endif %}")
case("{% if false %}{% for i in l %}{{ i|nosuch }}{% endfor %}{% endif %}")
case("{% if false %}{% macro m() %}{{ 1|nosuch }}{% endmacro %}{% endif %}")
case("{{ x|nosuch if false }}|{% if n is nosuch %}{% endif %}")
case("{% if false %}{{ l|sort }}{% endif %}ok")
# tuple subscripts (keys no JSON value has) and slices of slices
case("{{ d[1, 2] }}|{{ l[] }}|{{ messages[0]['role'[1:]] }}|{{ messages[0]['xrole'[1:]] }}|{{ s[1:][::-1][0] }}|{{ d['a', 'b'] }}")
case("{{ l[0,] }}")
case("{{ missing[1, 2] }}")
# namespace references inside tuple targets; namespace()/dict() of an undefined value
case("{% set ns = namespace(a=0, b=0) %}{% set ns.a, ns.b = 1, 2 %}{% set ns.a, x = [3, 4] %}{{ ns.a }}{{ ns.b }}{{ x }}")
case("{% set ns = namespace() %}{% if false %}{% set ns.a, b = false %}{% endif %}ok")
case("{% set ns = namespace(nothing, a=1) %}")
case("{{ dict(nothing) }}")
# an optional ':' ends a statement head
case("{% if n > 1: %}a{% elif n: %}b{% else: %}c{% endif %}{% for i in l: %}{{ i }}{% else: %}e{% endfor %}"
     "{% macro m(): %}M{% endmacro %}{{ m() }}{% set x: %}X{% endset %}{{ x }}{% filter upper: %}f{% endfilter %}")
case("{% endif: %}")
# ---- Markup (|safe, |escape): what is added to it is escaped, as markupsafe does ----
case("{{ 'a \"q\" '|safe + '<b> & \"c\"' }}|{{ '<x>' + 'y'|safe }}|{{ ('<i>'|e) + ('<j>'|safe) }}|{{ '<'|safe ~ '>' }}|{{ ('&'|safe) * 2 + '&' }}")
case("{{ ('<p>'|safe).upper() + '<' }}|{{ ('  a '|safe)|trim + '<' }}|{{ ('<a>'|safe)[1:] + '&' }}|{{ ('ab'|safe)[0] + '\"' }}"
     "|{{ ('x,y'|safe).split(',') }}|{{ ('-'|safe).join(['<', '>']) }}|{{ ('a'|safe).replace('a', '<') }}|{{ 5|safe + '<' }}")
case("{{ ['a'|safe, 'b'] }}|{{ ('<q>'|e)|e }}|{{ ('a'|safe)|upper + '<' }}|{{ ('a b'|safe)|title + '<' }}|{{ ('a'|safe)|string + '<' }}|{{ ('a\\nb'|safe)|indent(2) + '<' }}")
case("{% set x = 'p'|safe %}{% for t in ['<', '>'] %}{% set x = x + t %}{{ x }}{% endfor %}|{{ ('a'|safe) == 'a' }}|{{ 'a' in ('abc'|safe) }}")

# ---- mutants (seeded) of the model templates: whatever still renders must render identically ----
import os as _os

_PIECES = ["{{", "}}", "{%", "%}", "{#", "#}", "-", "+", "|", "(", ")", "[", "]", "'", '"', ".", ",", ":", " if ", " else ",
           " in ", " not ", " and ", " or ", "~", "*", "0", "1", " is ", "loop.index", "messages", "|trim", "|length",
           "|tojson", "\n", "  ", "\\n", "-1", "[1:]", "[::-1]", ".strip()", "ns", " true ", " none "]
_here = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "templates")
_MUT_CTX = dict(C, messages=[{"role": "system", "content": " sys "}, {"role": "user", "content": "q1"},
                             {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}])
# KN_CT_MUTANTS / KN_CT_SEED explore further by hand (the test uses 120 per template, the fixed seed)
_NMUT = int(_os.environ.get("KN_CT_MUTANTS", "120"))
if "KN_CT_SEED" in _os.environ:
    _rng.seed(int(_os.environ["KN_CT_SEED"]))
_MUT_NAMES = ["llama-3.1", "llama-3.2", "qwen-2.5", "phi-3.5", "gemma-3"]
if _os.environ.get("KN_CT_MUTATE_EXTRA"):
    _MUT_NAMES += ["extra/" + f[:-6] for f in sorted(_os.listdir(_os.path.join(_here, "extra"))) if f.endswith(".jinja")]
for _name in _MUT_NAMES:
    with open(_os.path.join(_here, _name + ".jinja"), encoding="utf-8") as _f:
        _src = _f.read()
    for _i in range(_NMUT):
        _m = _src
        for _e in range(_rng.randint(1, 3)):
            _at = _rng.randrange(len(_m) + 1)
            _k = _rng.random()
            if _k < 0.4:
                _m = _m[:_at] + _m[_at + _rng.randint(1, 6):]
            else:
                _m = _m[:_at] + _rng.choice(_PIECES) + _m[_at:]
        case(_m, _MUT_CTX)
