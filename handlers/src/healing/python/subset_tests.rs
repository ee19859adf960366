//! The subset recognizer against the full parser: wherever the recognizer answers, the full
//! parser answers the same outline (it accepts the file, with the same statements and
//! names); and the recognizer answers the plain test files heals are made of.

use super::{TopLevel, full_outline, grammar};

/// A module of the subset, with at least one of each statement and expression it reads.
const CORPUS: &str = r#""""Module docstring."""
import os
import os.path as p, sys
from . import sibling
from ..pkg.mod import (a, b as c,)
from typing import Any

X = (1,
     2)
Y: int = 3
Z = W = [x * 2 for x in range(10) if x % 2 == 0 if x]
D = {"a": 1, 'b': [1, 2], "c": {1, 2}}
S = {k: v for k, v in D.items()}
T = ()
E = ...
N = None if X else -1
s = f"{X} and {Y!r:>10} {D[0]} {p.sep}" 'plain' r"\d+\"" u'x' "\n\t\\\'\0"
t = """triple "quoted"
with lines"""
a, b = b, a
[c, d] = 1, 2
a.b.c[1:2, ::3] += 4 ** -2
q = not a and b or c < d <= e != f is not g not in h in i
w = a | b ^ c & d << 1 >> 2 + 3 - 4 * 5 / 6 // 7 % 8 @ m
u = ~a + -b
v = sum(x for x in range(3))
z = f(1, 2, *args, key=1, **kw)(3)[4].attr


@decorator
@decorator.attr(arg=1)
def top(a, b: int = 1, *args: str, **kwargs) -> Any:
    """Doc."""
    def inner():
        return
    class Local:
        def method(self):
            yield self
    if a:
        def hidden():
            pass
    elif b:
        pass
    else:
        pass
    for i, (j, k) in enumerate(b):
        if i:
            continue
        break
    else:
        pass
    while True:
        break
    with open(a) as fh, open(b):
        pass
    try:
        pass
    except (ValueError, TypeError) as error:
        raise RuntimeError("x") from error
    except Exception:
        raise
    except:
        pass
    else:
        pass
    finally:
        pass
    try:
        x = 1
    finally:
        x = 2
    return a, b


async def coroutine(session):
    result = await session.get("/")
    return [await r for r in result]


class Base(object, metaclass=Meta):
    attr: int
    def first(self): return self; pass
    async def second(self):
        assert await self.first(), "message"


x = 1; y = 2;
if x: pass
# a comment at the end
"#;

/// Edge cases: files the subset leaves to the full parser, files that are not Python, and
/// plain ones.
const SNIPPETS: &[&str] = &[
    "x = (1,\n",
    "def f(:\n",
    "def f():\nreturn\n",
    "  x = 1\n",
    "x = 1\n  y = 2\n",
    "if x:\n    pass\n  else:\n    pass\n",
    "f(a=1, a=2)\n",
    "def f(a, a): pass\n",
    "def f(a=1, b): pass\n",
    "f(**a, b)\n",
    "f(a=1, b)\n",
    "f() = 1\n",
    "x + 1 = 2\n",
    "None = 1\n",
    "(a, b()) = c\n",
    "a, b += 1\n",
    "(a): int = 1\n",
    "a.b: int\n",
    "x = 1 y = 2\n",
    "x = 1;; y = 2\n",
    "return 1\n",
    "break\n",
    "yield x\n",
    "await x\n",
    "class A: return 1\n",
    "def f():\n    class A:\n        return 1\n",
    "lambda: 1\n",
    "x = *a\n",
    "*a, b = c\n",
    "del x\n",
    "global x\n",
    "x = 'abc\n",
    "x = '''abc\n",
    "x = f'{}'\n",
    "x = f'{a b}'\n",
    "x = f'}'\n",
    "x = f'{a!x}'\n",
    "x = f'{a:{b}}'\n",
    "x = f'{a=}'\n",
    "x = f'{a:=3}'\n",
    "x = f'{a!r}'\n",
    "x = f'{{a}}'\n",
    "x = f'{a.b[c][0]()}'\n",
    "x = f'{if}'\n",
    "x = f'{a.if}'\n",
    "x = 0777\n",
    "x = 00\n",
    "x = 1_000\n",
    "x = 1e5\n",
    "x = 0x1F\n",
    "x = 1.\n",
    "x = .5\n",
    "x = 5j\n",
    "x = 1.5.real\n",
    "x = 1 .real\n",
    "x = 1if 1 else 2\n",
    "x = b'bytes'\n",
    "x = rb'raw'\n",
    "x = '\\N{DASH}'\n",
    "x = '\\x41'\n",
    "x = '\\u0041'\n",
    "x = '\\q'\n",
    "x = '\\01'\n",
    "x = r'\\'\n",
    "x = r'\\''\n",
    "x = 1 \\\n    + 2\n",
    "\tx = 1\n",
    "x = 1\r\n",
    "caf\u{e9} = 1\n",
    "x = 'caf\u{e9}'\n",
    "match x:\n    case 1:\n        pass\n",
    "type X = int\n",
    "match = 1\n",
    "print 'x'\n",
    "x = [1, 2\n",
    "x = )\n",
    "x = (]\n",
    "x = [)\n",
    "if x:\n",
    "if x:\n# only a comment\n",
    "try:\n    pass\n",
    "try:\n    pass\nelse:\n    pass\n",
    "try:\n    pass\nexcept:\n    pass\nexcept ValueError:\n    pass\n",
    "for x in 1, 2: pass\n",
    "for f() in x: pass\n",
    "with a as f(): pass\n",
    "x = yield\n",
    "@dec\nx = 1\n",
    "@dec\n",
    "async with a: pass\n",
    "async def f():\n    yield 1\n    return 2\n",
    "def f():\n    return\n        x = 1\n",
    "x = [x for x in y if z else w]\n",
    "x = a if b\n",
    "x = not\n",
    "x = a not b\n",
    "x = a is not not b\n",
    "f(x for x in y, 1)\n",
    "f(1, x for x in y)\n",
    "f(x for x in y)\n",
    "class A(x for x in y): pass\n",
    "x[] = 1\n",
    "x = {**a}\n",
    "x = {a: b, c}\n",
    "x = {a, b: c}\n",
    "def f(*, a): pass\n",
    "def f(a, /): pass\n",
    "def f(**a, b): pass\n",
    "def f(*a, *b): pass\n",
    "def f(*a, b): pass\n",
    "def f(a=1, *b, c): pass\n",
    "from . import *\n",
    "from x import *\n",
    "from import x\n",
    "import .x\n",
    "from x import (a\n",
    "from x import a,\n",
    "from x import ()\n",
    "x = __debug__\n",
    "__debug__ = 1\n",
    "x.__debug__ = 1\n",
    "def __debug__(): pass\n",
    "x = a := 1\n",
    "if (n := 1): pass\n",
    "x = 1 if 2 else 3 if 4 else 5\n",
    "nonlocal x\n",
    "def f(): nonlocal x\n",
    "",
    "\n\n",
    "# only\n",
    "x",
    "x = 1  # trailing",
    "def f():\n    pass",
    "class C:\n    x = 1\n\n\n\n",
    "x = [\n  1,\n    2,\n]\n",
    "x = (  # comment\n  1)\n",
    "if x:\n    pass\nelif y:\n    pass\nelif z:\n    pass\n",
    "while x: pass\nelse: pass\n",
    "for x, in y: pass\n",
    "x = y = z = 1\n",
    "x = (yield)\n",
    "x = a[1:2:3, ...]\n",
    "x = -1 ** -2\n",
    "x = await\n",
    "while a, b: pass\n",
    "if x: def f(): pass\n",
    "x = 1; if y: pass\n",
    "x = 1;\n",
    "def f(): return 1; return 2\n",
    "class C(): pass\n",
    "class C[T]: pass\n",
    "def f[T](): pass\n",
    "x = a.b.c(d)[e:f](g=h)\n",
    "x = [a for b in c for d in e if f]\n",
    "x = {a: b for a in c}\n",
    "x = {a for a in b}\n",
    "x = (a for a in b)\n",
    "x = [*a]\n",
    "f(*a, *b)\n",
    "f(a)(b)(c)\n",
    "x = a < b > c == d\n",
    "x = a <> b\n",
    "x = a ! b\n",
    "x = $\n",
    "x = a ? b\n",
    "x = `a`\n",
    "def f(a, b=1, *c, **d,): pass\n",
    "def f(a: int, b: str = 'x') -> None: pass\n",
    "x: int\n",
    "x: int = 1, 2\n",
    "x: list[int] = []\n",
    "a[b]: c\n",
    "a[b], c: d\n",
    "for x in y:\n    break\nelse:\n    break\n",
    "while 1:\n    def f():\n        break\n",
    "def f():\n    for x in y:\n        return x\n",
    "x = [\n]\n",
    "x = ('a'\n     'b')\n",
    "x = '''a\nb''' 'c'\n",
    "x = f'''{a}\n{b}'''\n",
    "x = f'{a}' f'{b}'\n",
    "if a:\n    if b:\n        pass\n    else:\n        pass\nelse:\n    pass\n",
    "@a.b\nclass C:\n    pass\n",
    "@a\n@b\nasync def f():\n    pass\n",
    "async def f():\n    await a ** 2\n",
    "def f():\n    await a\n",
    "x = not a == b\n",
    "x = a and not b\n",
    "x = (a)\n",
    "(a) = 1\n",
    "((a, b)) = 1, 2\n",
    "[a, (b, c)] = d\n",
    "x = () = y\n",
    "x = [] = y\n",
    "a.b = c.d = e\n",
    "f(a=1, **b)\n",
    "f(a, *b, c)\n",
    "f(a, b=1, *c)\n",
];

/// Whether the recognizer's answer, when it gives one, is the full parser's.
fn agrees(source: &str) -> Option<Vec<TopLevel>> {
    let fast = grammar::outline(source);
    if fast.is_some() {
        assert_eq!(fast, full_outline(source), "the subset answered wrong for:\n{source}");
    }
    fast
}

#[test]
fn the_subset_answers_plain_files_as_the_full_parser_does() {
    let outline = agrees(CORPUS).expect("the corpus is in the subset");
    let names: Vec<&str> = outline.iter().flat_map(|s| s.names.iter().map(String::as_str)).collect();
    assert_eq!(names, ["inner", "method", "top", "coroutine", "first", "second"]);
    assert_eq!(outline.len(), 30, "{outline:?}");
    let mut answered = 0;
    for snippet in SNIPPETS {
        answered += usize::from(agrees(snippet).is_some());
    }
    assert!(answered > 40, "the subset answered only {answered} snippets");
}

/// Every character of the corpus deleted, and each of a set of tokens inserted before it:
/// thousands of files, most of them broken in one place.
#[test]
fn every_one_character_edit_of_the_corpus_is_judged_as_the_full_parser_would() {
    let inserts = ["(", ":", "\"", "'", ",", " ", "\n", "    ", "\\", "{"];
    let (mut edits, mut answered) = (0, 0);
    let boundaries: Vec<usize> = CORPUS.char_indices().map(|(at, _)| at).collect();
    for (i, at) in boundaries.iter().enumerate() {
        let next = boundaries.get(i + 1).copied().unwrap_or(CORPUS.len());
        let deleted = format!("{}{}", &CORPUS[..*at], &CORPUS[next..]);
        let variants = std::iter::once(deleted)
            .chain(inserts.iter().map(|insert| format!("{}{insert}{}", &CORPUS[..*at], &CORPUS[*at..])));
        for variant in variants {
            edits += 1;
            answered += usize::from(agrees(&variant).is_some());
        }
    }
    assert!(answered * 10 > edits, "the subset answered {answered} of {edits} edits");
}
